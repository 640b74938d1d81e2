"""Ablating attention heads one at a time, batched.

A head's output is its slice of the input of the attention output projection
W_O (the heads' outputs are concatenated there), so ablating head h of block l
replaces that slice before W_O: by zeros (zero ablation) or by the head's mean
output over the dataset's real tokens (mean ablation). W_O's bias stays.

Ablating every head the naive way costs one full forward per (head, mode).
`head_effects` saves most of that:

- the clean pass caches each block's input, and the ablations of block l
  start from it (`StartAt`): blocks 1..l-1 are never re-run;
- the ablations of one block run together, as copies of the batch stacked
  along the batch axis (`HeadPatch` patches copy j with its own head), so
  each forward is large enough to keep a GPU busy.

`naive_head_effects` is the one-forward-per-head reference; a test checks that
the two agree and `benchmarks/heads.py` times them.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import numpy as np

from workflow import models
from workflow.tokenize import Documents, batches

MODES = ("zero", "mean")


class HeadPatch(contextlib.AbstractContextManager):
    """Replace heads' outputs at one block's W_O input.

    The forward's batch is ``len(plan)`` stacked copies of the same documents;
    copy j gets ``plan[j] = (head, fill)``: the head's slice is set to `fill`
    (a (head_dim,) tensor, or None for zeros). ``(None, None)`` leaves a copy clean.
    """

    def __init__(self, head_out_module, n_heads: int, plan: list[tuple[int | None, object]]):
        self.module, self.n_heads, self.plan = head_out_module, n_heads, plan
        self._handle = None

    def _patch(self, module, args):
        z = args[0]
        copies = len(self.plan)
        rows, width = z.shape[0] // copies, z.shape[-1]
        z = z.reshape(copies, rows, *z.shape[1:-1], self.n_heads, width // self.n_heads).clone()
        for j, (head, fill) in enumerate(self.plan):
            if head is None:
                continue
            z[j, ..., head, :] = 0.0 if fill is None else fill.to(z.dtype)
        return (z.reshape(copies * rows, *args[0].shape[1:]), *args[1:])

    def __enter__(self):
        self._handle = self.module.register_forward_pre_hook(self._patch)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False


class StartAt(contextlib.AbstractContextManager):
    """Run a model from block `index` (0-based) on: the blocks before it are taken out of
    the model's block list and `hidden` (that block's cached input) replaces its input.
    Embeddings, masks and everything after the blocks run as usual."""

    def __init__(self, base_model, index: int, hidden):
        self.where, self.index, self.hidden = models.locate(base_model), index, hidden
        self._full, self._handle = None, None

    def _replace(self, module, args, kwargs):
        if args:
            return (self.hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self.hidden}

    def __enter__(self):
        import torch

        w = self.where
        self._full = getattr(w.block_owner, w.block_attr)
        setattr(w.block_owner, w.block_attr, torch.nn.ModuleList(list(self._full)[self.index :]))
        self._handle = self._full[self.index].register_forward_pre_hook(self._replace, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        setattr(self.where.block_owner, self.where.block_attr, self._full)
        return False


class BlockInputs(contextlib.AbstractContextManager):
    """Record every block's input hidden states during one forward."""

    def __init__(self, base_model):
        self.where = models.locate(base_model)
        self.inputs: list = [None] * len(self.where.blocks)
        self._handles = []

    def __enter__(self):
        for i, block in enumerate(self.where.blocks):
            def save(module, args, kwargs, i=i):
                self.inputs[i] = (args[0] if args else kwargs["hidden_states"]).detach()

            self._handles.append(block.register_forward_pre_hook(save, with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        return False


class HeadMeans(contextlib.AbstractContextManager):
    """Accumulate each head's mean output over real tokens (what mean ablation writes)."""

    def __init__(self, base_model, n_heads: int):
        self.where, self.n_heads = models.locate(base_model), n_heads
        self.sums: list = [None] * len(self.where.blocks)
        self.count = 0
        self.mask = None  # (batch, seq) of the current forward; set by the caller
        self._handles = []

    def __enter__(self):
        for i, module in enumerate(self.where.head_out):
            def add(module, args, i=i):
                z = args[0].double()
                m = self.mask.to(z.dtype)[..., None]
                total = (z * m).sum(dim=(0, 1))
                self.sums[i] = total if self.sums[i] is None else self.sums[i] + total

            self._handles.append(module.register_forward_pre_hook(add))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        return False

    def update_count(self) -> None:
        self.count += int(self.mask.sum())

    def means(self) -> list:
        """Per block, a (n_heads, head_dim) float tensor."""
        return [(s / max(self.count, 1)).float().reshape(self.n_heads, -1) for s in self.sums]


# ---------------------------------------------------------------- measures

# A measure maps (logits of one copy, model inputs, labels) to sums of its metrics.
Measure = Callable[[object, dict, object], np.ndarray]


def task_measure(logits, inputs, labels) -> np.ndarray:
    """[summed cross-entropy, correct predictions] of a sequence classifier."""
    import torch.nn.functional as F

    logits = logits.float()
    return np.array([float(F.cross_entropy(logits, labels, reduction="sum")), float((logits.argmax(-1) == labels).sum())])


TASK_METRICS = ("loss", "accuracy")


def lm_measure(logits, inputs, labels) -> np.ndarray:
    """[summed next-token NLL, predicted tokens] of a causal LM."""
    import torch.nn.functional as F

    mask = inputs["attention_mask"][:, 1:].bool()
    targets = inputs["input_ids"][:, 1:][mask]
    logp = logits[:, :-1][mask].float().log_softmax(-1)
    return np.array([float(F.nll_loss(logp, targets, reduction="sum")), float(mask.sum())])


LM_METRICS = ("loss", "tokens")


# ---------------------------------------------------------------- ablation


def _plans(modes: Iterable[str], n_heads: int, means, block: int) -> list[tuple[str, int, object]]:
    out = []
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"ablation mode {mode!r}; known: {', '.join(MODES)}")
        for head in range(n_heads):
            out.append((mode, head, None if mode == "zero" else means[block][head]))
    return out


def _ordered(docs: Documents, batch_size: int, pad_id: int):
    order = np.argsort([len(t) for t in docs.token_ids], kind="stable")
    return batches(docs, batch_size, pad_id, order)


def _labelled_batches(docs: Documents, batch_size: int, pad_id: int, device):
    """(doc indices, inputs, labels) on `device`, documents sorted by length (least padding)."""
    import torch

    for idx, inputs in _ordered(docs, batch_size, pad_id):
        inputs = {k: v.to(device) for k, v in inputs.items()}
        yield idx, inputs, torch.from_numpy(docs.labels[idx].astype(np.int64)).to(device)


class _Sums:
    """Metric sums of the clean run, (n_metrics,), and of each ablation, (modes, blocks, heads, n_metrics)."""

    def __init__(self, shape: tuple[int, int, int]):
        self.shape, self.clean, self.ablated = shape, None, None

    def add_clean(self, values: np.ndarray) -> None:
        if self.clean is None:
            self.clean, self.ablated = np.zeros_like(values), np.zeros((*self.shape, len(values)))
        self.clean += values


def head_means(model, docs: Documents, batch_size: int, pad_id: int, device) -> list:
    """Each head's mean output over the real tokens of `docs`, per block."""
    import torch

    n_heads = models.n_heads(model.config)
    with torch.inference_mode(), HeadMeans(model.base_model, n_heads) as acc:
        for _, inputs in _ordered(docs, batch_size, pad_id):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            acc.mask = inputs["attention_mask"]
            model(**inputs)
            acc.update_count()
    return acc.means()


def head_effects(model, docs: Documents, measure: Measure, modes, means, batch_size: int, max_rows: int, pad_id: int,
                 device, progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sums of `measure` clean, shape (n_metrics,), and with each head ablated, shape
    (n_modes, n_blocks, n_heads, n_metrics). `means` (from `head_means`) is needed for mode "mean";
    at most `max_rows` rows (documents x copies) run in one forward."""
    import torch

    base = model.base_model
    where = models.locate(base)
    n_blocks, n_heads = len(where.blocks), models.n_heads(model.config)
    modes = list(modes)
    sums = _Sums((len(modes), n_blocks, n_heads))
    with torch.inference_mode():
        for step, (idx, inputs, labels) in enumerate(_labelled_batches(docs, batch_size, pad_id, device)):
            with BlockInputs(base) as cache:
                sums.add_clean(measure(model(**inputs).logits, inputs, labels))
            rows = len(idx)
            per_forward = max(1, max_rows // rows)
            for block in range(n_blocks):
                plans = _plans(modes, n_heads, means, block)
                for start in range(0, len(plans), per_forward):
                    chunk = plans[start : start + per_forward]
                    copies = len(chunk)
                    stacked = {k: v.repeat(copies, *([1] * (v.dim() - 1))) for k, v in inputs.items()}
                    hidden = cache.inputs[block].repeat(copies, 1, 1)
                    patch = [(head, fill) for _, head, fill in chunk]
                    with StartAt(base, block, hidden), HeadPatch(where.head_out[block], n_heads, patch):
                        logits = model(**stacked).logits
                    for j, (mode, head, _) in enumerate(chunk):
                        part = {k: v[j * rows : (j + 1) * rows] for k, v in stacked.items()}
                        sums.ablated[modes.index(mode), block, head] += measure(logits[j * rows : (j + 1) * rows],
                                                                                part, labels)
            if progress:
                progress(f"batch {step + 1}: {rows} documents, {n_blocks * n_heads * len(modes)} ablations")
    return sums.clean, sums.ablated


def naive_head_effects(model, docs: Documents, measure: Measure, modes, means, batch_size: int, pad_id: int,
                       device) -> tuple[np.ndarray, np.ndarray]:
    """The reference: one full forward per (mode, block, head), nothing cached or stacked."""
    import torch

    base = model.base_model
    where = models.locate(base)
    n_blocks, n_heads = len(where.blocks), models.n_heads(model.config)
    modes = list(modes)
    sums = _Sums((len(modes), n_blocks, n_heads))
    with torch.inference_mode():
        for idx, inputs, labels in _labelled_batches(docs, batch_size, pad_id, device):
            sums.add_clean(measure(model(**inputs).logits, inputs, labels))
            for block in range(n_blocks):
                for mode, head, fill in _plans(modes, n_heads, means, block):
                    with HeadPatch(where.head_out[block], n_heads, [(head, fill)]):
                        sums.ablated[modes.index(mode), block, head] += measure(model(**inputs).logits, inputs, labels)
    return sums.clean, sums.ablated
