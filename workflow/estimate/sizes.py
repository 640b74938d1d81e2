"""What a study's jobs will process, known before any of them runs: each dataset split's documents
and text, each (model, dataset, split)'s tokens after the model's tokenizer and truncation, and each
model's shape (parameters, layers, width).

Local sources (built-in, boards, Rotten Tomatoes, files) are read and tokenized in full, as the
dataset and tokens stages will (they take a second or two here). A Hugging Face dataset is not
downloaded: it counts `max_train` / `max_test` documents of `max_length` tokens each (an upper
bound), and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

log = logging.getLogger(__name__)
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Split:
    docs: int
    text_bytes: int  # UTF-8 bytes of the documents' text
    exact: bool  # False: a Hugging Face dataset counted from its caps


@dataclass(frozen=True)
class Shape:
    params: int  # every parameter, with the embeddings and the LM head where it has one
    body_flops: int  # forward FLOPs per token of the blocks (2 x their parameters), attention scores aside
    head_flops: int  # forward FLOPs per token of an LM head (2 x d_model x vocab)
    n_layers: int
    d_model: int
    n_heads: int


class Sizes:
    """Counts for a validated study (`workflow.config.load`)."""

    def __init__(self, study: dict):
        self.study = study
        self._tables: dict[str, tuple] = {}
        self.notes: list[str] = []

    # ------------------------------------------------------------ documents

    def _dataset(self, name: str):
        """(train, test) tables as the dataset stage writes them (capped), or None for a hub dataset."""
        if name not in self._tables:
            from workflow.datasets import sources

            spec = self.study["datasets"][name]
            if spec["source"] == "huggingface":
                self._tables[name] = None
                self.notes.append(
                    f"dataset {name!r} (Hugging Face) is not downloaded: counted as max_train / max_test "
                    "documents of max_length tokens each, an upper bound"
                )
            else:
                train, test, _ = sources.LOADERS[spec["source"]](spec)
                self._tables[name] = sources.capped(train, test, spec)
        return self._tables[name]

    def split(self, dataset: str, split: str) -> Split:
        tables = self._dataset(dataset)
        if tables is None:
            spec = self.study["datasets"][dataset]
            n = spec.get(f"max_{split}")
            if n is None:
                raise SystemExit(
                    f"datasets.{dataset}.max_{split}: a Hugging Face dataset needs a cap to be estimated "
                    "without downloading it"
                )
            return Split(n, n * 4 * 512, exact=False)
        table = tables[SPLITS.index(split)]
        return Split(len(table), int(table["text"].str.len_bytes().sum()), exact=True)

    # ------------------------------------------------------------ tokens

    @cache  # noqa: B019 (one Sizes per estimate)
    def tokens(self, model: str, dataset: str, split: str) -> int:
        """Tokens of the split's tokens table for this model (the activation rows of its sets): the
        documents encoded as the tokens stage encodes them (`workflow.store.tokens.encode`: specials,
        a decoder's BOS, truncation at max_length or `tokenize.stride` windows). A chat template's
        tokens are not counted (noted)."""
        from workflow.models.families import FAMILIES
        from workflow.store.tokens import encode

        spec = self.study["models"][model]
        max_length, stride = spec["max_length"], self.study["tokenize"]["stride"]
        tables = self._dataset(dataset)
        if tables is None:
            return self.split(dataset, split).docs * max_length
        texts = tables[SPLITS.index(split)]["text"].to_list()
        if not texts:
            return 0
        note = f"model {model!r}: its chat template's tokens are not counted (a few per document)"
        if spec.get("chat_source") and note not in self.notes:
            self.notes.append(note)
        fam = FAMILIES[spec["family"]]
        enc, _, _ = encode(self._tokenizer(model), texts, max_length, True, fam.causal and fam.prepend_bos, stride)
        return sum(len(ids) for ids in enc["input_ids"])

    @cache  # noqa: B019
    def _tokenizer(self, model: str):
        from workflow.models import scratch

        spec = self.study["models"][model]
        if "scratch_vocab" in spec:  # built by init_model; the same word-level tokenizer, made here
            return scratch.tokenizer(spec["scratch_vocab"], spec["scratch"]["family"], spec["max_length"])
        from workflow.models.loading import load_tokenizer
        from workflow.models.sources import resolve_source

        return load_tokenizer(resolve_source(spec["source"]))

    def mean_tokens(self, model: str, dataset: str, split: str = "test") -> float:
        docs = self.split(dataset, split).docs
        return self.tokens(model, dataset, split) / max(1, docs)

    # ------------------------------------------------------------ models

    @cache  # noqa: B019
    def shape(self, model: str) -> Shape:
        """Parameters and FLOPs of the model, from its config on the meta device (no weights read)."""
        import torch
        from transformers import AutoConfig, AutoModel

        from workflow.models import scratch
        from workflow.models.sources import read_model_config, resolve_source

        spec = self.study["models"][model]
        if "scratch_vocab" in spec:
            config = scratch.model_config(spec, spec["scratch_vocab"], spec["board_dim"] ** 2)
        else:
            config = read_model_config(resolve_source(spec["source"]))
        kwargs = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "transformers_version")}
        cfg = AutoConfig.for_model(config["model_type"], **kwargs)
        with torch.device("meta"):
            body = AutoModel.from_config(cfg)
        params = sum(p.numel() for p in body.parameters())
        embeddings = sum(m.weight.numel() for m in body.modules() if isinstance(m, torch.nn.Embedding))
        d_model, vocab = spec["d_model"], int(getattr(cfg, "vocab_size", 0) or 0)
        tied = getattr(cfg, "tie_word_embeddings", True)
        head = d_model * vocab
        n_heads = int(getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 1))
        n_layers = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 1))
        return Shape(
            params=params + (0 if tied else head),
            body_flops=2 * (params - embeddings),
            head_flops=2 * head,
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
        )

    def forward_flops(self, model: str, dataset: str, head: bool = False) -> float:
        """Forward FLOPs per token on this dataset: the blocks, the attention over its documents'
        mean length (2 x layers x length x d_model, Kaplan et al. 2020), and the LM head if asked."""
        s = self.shape(model)
        length = self.mean_tokens(model, dataset)
        return s.body_flops + 2 * s.n_layers * length * s.d_model + (s.head_flops if head else 0)
