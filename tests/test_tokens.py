"""Stage `tokens`: the tokens table contract, and reading documents back."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tests.conftest import tokens_table
from tests.tiny_models import make_tiny
from workflow.datasets.tokenize import tokenize_table
from workflow.models import loading
from workflow.stages import tokens
from workflow.store.tokens import read_documents


def test_tokens_table_contract(data_dir, tiny_bert, tmp_path):
    table = tokens.run(str(data_dir / "train.parquet"), str(tiny_bert), 64, str(tmp_path / "t.parquet"))
    data = pl.read_parquet(data_dir / "train.parquet")
    assert table["row"].to_list() == list(range(len(table)))
    assert table["doc_id"].unique(maintain_order=True).to_list() == data["id"].to_list()
    tokenizer = loading.load_tokenizer(str(tiny_bert))
    assert tokenizer.pad_token_id not in table.filter(~pl.col("is_special"))["token_id"].to_list()
    first = table.filter(pl.col("doc_id") == data["id"][0])
    assert first["pos"].to_list() == list(range(len(first)))
    assert first["token_id"].to_list() == tokenizer(data["text"][0])["input_ids"]
    # [CLS] and [SEP] are kept and flagged; they carry no concept
    specials = table.filter(pl.col("is_special"))
    assert set(specials["token"]) == {"[CLS]", "[SEP]"} and specials["concepts"].list.len().sum() == 0
    # planted concepts land on the tokens that spell them
    negations = table.filter(pl.col("concepts").list.contains("negation"))
    assert len(negations) > 0 and set(negations["token"]) <= {"not", "never", "hardly", "barely", "scarcely"}
    tagged = table.filter(pl.col("token").is_in(["not", "never"]))
    assert tagged["concepts"].list.contains("negation").all()


def test_document_sample_is_seeded_capped_and_in_table_order(data_dir, tiny_bert, tmp_path):
    docs = read_documents(tokens_table(data_dir, tiny_bert, tmp_path, split="train"))
    assert docs.n_tokens == sum(len(t) for t in docs.token_ids) and len(docs.special) == len(docs.token_ids)
    sub = docs.sample(max_tokens=300, seed=1)
    assert 0 < sub.n_tokens <= 300 and sub.n_tokens + max(len(t) for t in docs.token_ids) > 300
    again = docs.sample(max_tokens=300, seed=1)
    assert [t.tolist() for t in sub.token_ids] == [t.tolist() for t in again.token_ids]
    other = docs.sample(max_tokens=300, seed=2)
    assert [t.tolist() for t in sub.token_ids] != [t.tolist() for t in other.token_ids]
    positions = [next(i for i, t in enumerate(docs.token_ids) if np.array_equal(t, s)) for s in sub.token_ids]
    assert positions == sorted(positions)  # table order kept
    assert len(docs.sample(max_docs=5).token_ids) == 5 and docs.sample().n_tokens == docs.n_tokens
    assert all(s[0] and s[-1] and not s[1:-1].any() for s in sub.special)  # [CLS] ... [SEP]


def test_decoders_that_expect_bos_open_with_it_once(data_dir, tmp_path):
    from tests.tiny_models import BOS, make_tiny, tokenizer_for

    firsts = {}
    for name, model_type, tokenizer_type in (
        ("llama", "llama", "llama"),  # its tokenizer adds <s>: nothing more is added
        ("llama-bare", "llama", "gpt2"),  # a tokenizer that adds none: the stage adds it
        ("gpt2", "gpt2", "gpt2"),  # GPT-2 expects none
    ):
        folder = make_tiny(model_type, tmp_path / name)
        tokenizer_for(tokenizer_type).save_pretrained(folder)
        table = tokens.run(str(data_dir / "test.parquet"), str(folder), 16, str(tmp_path / f"{name}.parquet"))
        firsts[name] = table.filter(pl.col("pos") == 0)
        assert table.group_by("doc_id").len()["len"].max() <= 16
        if name != "gpt2":
            assert (table.filter(pl.col("pos") == 1)["token_id"] != BOS).all()  # never twice
    for name in ("llama", "llama-bare"):
        assert (firsts[name]["token_id"] == BOS).all() and firsts[name]["is_special"].all()
    assert not (firsts["gpt2"]["token_id"] == BOS).any() and not firsts["gpt2"]["is_special"].any()


CHAT = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def test_a_chat_template_wraps_each_document_and_its_tokens_are_marked(tmp_path):
    """The document's own tokens keep their text and planted concepts; the template's (role headers,
    turn markers) are special, and a response column becomes the assistant's turn."""
    from tests.tiny_models import make_tiny

    folder = make_tiny("llama", tmp_path / "llama")
    tokenizer = loading.load_tokenizer(str(folder))
    tokenizer.chat_template = CHAT
    spans = [[{"start": 4, "end": 8, "concept": "colour"}], []]
    data = pl.DataFrame(
        {
            "id": [0, 1],
            "text": ["the blue sky", "a fine day"],
            "label": [0, 1],
            "response": ["", "it was"],
            "spans": spans,
        },
        schema_overrides={"spans": pl.List(pl.Struct({"start": pl.Int64, "end": pl.Int64, "concept": pl.Utf8}))},
    )
    table, _ = tokenize_table(data, tokenizer, 64, bos=True, template=tokenizer)
    first = table.filter(pl.col("doc_id") == 0)
    own = first.filter(~pl.col("is_special"))
    assert tokenizer.convert_tokens_to_string(own["token"].to_list()).strip() == "the blue sky"
    assert first["token_id"][0] == tokenizer.bos_token_id and first["is_special"].sum() >= 4  # <s> user : ... </s> <s>
    marked = own.filter(pl.col("concepts").list.len() > 0)["token"].to_list()
    assert tokenizer.convert_tokens_to_string(marked).strip() == "blue"  # the span moved with the text
    second = table.filter((pl.col("doc_id") == 1) & ~pl.col("is_special"))
    assert tokenizer.convert_tokens_to_string(second["token"].to_list()).split() == ["a", "fine", "day", "it", "was"]
    text = tokenizer.convert_tokens_to_string(table.filter(pl.col("doc_id") == 1)["token"].to_list())
    assert "assistant" in text and text.count("<s>") == 2  # one BOS per turn, none added twice


def test_truncation_is_counted_per_split(tiny_bert, tiny_gpt2, tmp_path):
    """Documents of 12 words (14 tokens with [CLS] and [SEP]) at max_length 8 lose 6 tokens each;
    2-word documents lose none. A decoder that gets a BOS prepended loses one more token to it."""
    from workflow.store.files import read_json

    texts = ["red blue green day red blue green day red blue green day"] * 3 + ["red day"] * 2
    pl.DataFrame({"id": list(range(5)), "text": texts, "label": [0, 1, 0, 1, 0]}).write_parquet(tmp_path / "d.parquet")
    args = (str(tmp_path / "d.parquet"), str(tiny_bert), 8, str(tmp_path / "t.parquet"), None)
    table = tokens.run(*args, str(tmp_path / "t.json"))
    cut = read_json(tmp_path / "t.json")
    assert len(table) == cut["tokens_kept"] == 3 * 8 + 2 * 4
    assert cut["documents_truncated"] == 3 and cut["tokens_cut"] == 3 * 6 and cut["stride"] is None
    assert cut["cut_share"] == 18 / (18 + 32)
    from tests.tiny_models import tokenizer_for

    bare = make_tiny("llama", tmp_path / "llama-bare")  # Llama expects BOS; this tokenizer adds none
    tokenizer_for("gpt2").save_pretrained(bare)
    n_own = len(loading.load_tokenizer(str(bare))(texts[0])["input_ids"])
    table = tokens.run(
        str(tmp_path / "d.parquet"), str(bare), 8, str(tmp_path / "l.parquet"), None, str(tmp_path / "l.json")
    )
    assert table.group_by("doc_id").len()["len"].max() == 8  # the stage's BOS + 7 of the document's own
    assert read_json(tmp_path / "l.json")["tokens_cut"] == sum(max(0, n_own - 7) for _ in range(3)) + sum(
        max(0, len(loading.load_tokenizer(str(bare))("red day")["input_ids"]) - 7) for _ in range(2)
    )


@pytest.mark.parametrize("model_type", ["bert", "llama"])
def test_windows_cover_every_token_of_a_long_document(model_type, tmp_path):
    """With a stride, a 40-word document becomes windows of at most max_length tokens, each opened
    and closed as the tokenizer opens a document, overlapping by `stride` tokens; together they hold
    every token of the untruncated document, and read back as one sequence each."""
    from tests.tiny_models import make_tiny

    model = make_tiny(model_type, tmp_path / "model")
    words = " ".join(f"w{i % 7} red blue" for i in range(14))
    texts = [words, "red day"]
    pl.DataFrame({"id": [7, 9], "text": texts, "label": [1, 0]}).write_parquet(tmp_path / "d.parquet")
    table = tokens.run(str(tmp_path / "d.parquet"), str(model), 16, str(tmp_path / "t.parquet"), stride=4)
    tokenizer = loading.load_tokenizer(str(model))
    whole = [t for t, s in zip(*_plain(tokenizer, words)) if not s]  # the document's own tokens
    long = table.filter(pl.col("doc_id") == 7)
    per_window = long.group_by("window", maintain_order=True).agg("token_id", "is_special", "pos", "label")
    assert len(per_window) >= 3 and per_window["window"].to_list() == list(range(len(per_window)))
    content = []
    for w, row in enumerate(per_window.iter_rows(named=True)):
        assert len(row["token_id"]) <= 16 and row["pos"] == list(range(len(row["pos"])))
        assert set(row["label"]) == {1} and row["is_special"][0]  # [CLS] / BOS opens every window
        own = [t for t, s in zip(row["token_id"], row["is_special"]) if not s]
        content += own if w == 0 else own[4:]  # each window repeats the last 4 of the one before
    assert content == whole
    assert table.filter(pl.col("doc_id") == 9)["window"].to_list() == [0] * len(table.filter(pl.col("doc_id") == 9))
    docs = read_documents(tmp_path / "t.parquet")
    assert len(docs.token_ids) == len(per_window) + 1 and list(docs.windows) == [*range(len(per_window)), 0]
    assert list(docs.doc_ids) == [7] * len(per_window) + [9] and len(docs.first_windows().token_ids) == 2


def _plain(tokenizer, text):
    enc = tokenizer(text, return_special_tokens_mask=True)
    ids, special = enc["input_ids"], enc["special_tokens_mask"]
    return ids, special


def test_evaluation_averages_the_logits_of_a_documents_windows():
    """A document whose windows disagree is scored by their mean logits, once."""
    import torch

    from workflow.models.classifier import evaluate
    from workflow.store.tokens import Documents

    class Fixed(torch.nn.Module):  # logits from the first token id of each sequence
        def forward(self, input_ids, attention_mask):
            table = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
            return type("Out", (), {"logits": table[input_ids[:, 0]]})()

    seqs = [np.array([1, 1]), np.array([2]), np.array([3])]  # doc 5: windows (3, 0) and (0, 1); doc 6: (0, 5)
    offsets = np.array([0, 2, 3, 4])
    docs = Documents(seqs, np.array([0, 0, 1]), offsets, [np.zeros(len(s), bool) for s in seqs], np.array([5, 5, 6]))
    docs.windows = np.array([0, 1, 0])
    out = evaluate(Fixed(), docs, 8, 0, torch.device("cpu"), None)
    assert out["n_docs"] == 2 and out["n_windows"] == 3 and out["accuracy"] == 1.0  # mean (1.5, 0.5) -> class 0
    mean = torch.tensor([[1.5, 0.5], [0.0, 5.0]])
    want = torch.nn.functional.cross_entropy(mean, torch.tensor([0, 1])).item()
    assert out["loss"] == pytest.approx(want)


@pytest.mark.workflow
def test_a_windowed_study_runs_end_to_end(tiny_bert, tmp_path):
    """tokenize.stride through the whole Snakefile (SAE, diff, heads, report): activation sets hold
    every window's tokens, classifiers score each document once, the report tables the windows."""
    import yaml

    from tests.conftest import run_snakemake, tiny_study
    from workflow.store.activations import ActivationSet
    from workflow.store.files import read_json

    cfg = {
        "models": {"bert": {"source": str(tiny_bert)}},
        "datasets": {"news": {"source": "builtin", "task": "news_topic", "n_train": 200, "n_test": 40, "seed": 1}},
        **tiny_study(layers=[2], sites=["resid_post"], tokenize={"max_length": 12, "stride": 2}),
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(tmp_path, "--cores", "2", "--configfile", "study.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    table = pl.read_parquet(tmp_path / "results/tokens/bert/news/test.parquet")
    summary = read_json(tmp_path / "results/tokens/bert/news/test.json")
    assert (
        summary["tokens_cut"] == 0
        and summary["windows"] == table.select(pl.struct("doc_id", "window").n_unique()).item()
    )
    assert summary["windows"] > 2 * 40 and table["pos"].max() < 12
    metrics = read_json(tmp_path / "results/models/bert/classify/news/metrics.json")
    assert metrics["finetuned"]["n_docs"] == 40 and metrics["finetuned"]["n_windows"] == summary["windows"]
    acts = ActivationSet(tmp_path / "results/activations/bert/finetuned/news/test/resid_post/L2")
    assert acts.n_rows == len(table)
    page = (tmp_path / "results/reports/bert/news/index.html").read_text()
    assert "Windows of max_length 12, overlapping by 2" in page
    sae = tmp_path / "results/saes/bert/finetuned/news/resid_post/L2/topk"
    examples = pl.read_parquet(sae / "examples.parquet")
    assert len(examples) and all("[CLS]" not in tokens[1:] for tokens in examples["tokens"])  # one window each
    sentences = pl.read_parquet(sae / "sentences.parquet")  # each document's first window, in order
    assert all(g["pos"].to_list() == list(range(len(g))) for _, g in sentences.group_by("doc_id"))
