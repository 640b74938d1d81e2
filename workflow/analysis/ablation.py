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

The one-forward-per-head reference is ``tests/references.py``'s
`naive_head_effects`; a test checks that the two agree and
`benchmarks/heads.py` times them. `task_ablations` and `lm_ablations` turn the
sums into the long rows of stage `heads`' ``ablation.parquet``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np

from workflow.models.families import locate
from workflow.models.families import n_heads as heads_of
from workflow.models.hooks import Hooks, block_input, with_block_input
from workflow.store.tokens import Documents, batches, labelled_batches, length_order

log = logging.getLogger(__name__)

MODES = ("zero", "mean")


class HeadPatch(Hooks):
    """Replace heads' outputs at one block's W_O input.

    The forward's batch is ``len(plan)`` stacked copies of the same documents;
    copy j gets ``plan[j] = (head, fill)``: the head's slice is set to `fill`
    (a (head_dim,) tensor, or None for zeros). ``(None, None)`` leaves a copy clean.
    """

    def __init__(self, head_out_module, n_heads: int, plan: list[tuple[int | None, object]]):
        super().__init__([(head_out_module, "pre", self._patch)])
        self.n_heads, self.plan = n_heads, plan

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


class StartAt(Hooks):
    """Run a model from block `index` (0-based) on: the blocks before it are taken out of
    the model's block list and `hidden` (that block's cached input) replaces its input.
    Embeddings, masks and everything after the blocks run as usual."""

    def __init__(self, base_model, index: int, hidden):
        self.where, self.index, self.hidden = locate(base_model), index, hidden
        self._full = getattr(self.where.block_owner, self.where.block_attr)
        super().__init__([(self._full[index], "pre_kwargs", self._replace)])

    def _replace(self, module, args, kwargs):
        return with_block_input(args, kwargs, self.hidden)

    def __enter__(self):
        import torch

        super().__enter__()  # the hook first: if registering fails, the block list is still whole
        setattr(self.where.block_owner, self.where.block_attr, torch.nn.ModuleList(list(self._full)[self.index :]))
        return self

    def __exit__(self, *exc):
        super().__exit__(*exc)
        setattr(self.where.block_owner, self.where.block_attr, self._full)
        return False


class BlockInputs(Hooks):
    """Record every block's input hidden states during one forward."""

    def __init__(self, base_model):
        blocks = locate(base_model).blocks
        self.inputs: list = [None] * len(blocks)
        super().__init__([(block, "pre_kwargs", self._saver(i)) for i, block in enumerate(blocks)])

    def _saver(self, i: int):
        def save(module, args, kwargs):
            self.inputs[i] = block_input(args, kwargs).detach()

        return save


class HeadMeans(Hooks):
    """Accumulate each head's mean output over real tokens (what mean ablation writes)."""

    def __init__(self, base_model, n_heads: int):
        head_out = locate(base_model).head_out
        self.n_heads = n_heads
        self.sums: list = [None] * len(head_out)
        self.count = 0
        self.mask = None  # (batch, seq) of the current forward; set by the caller
        super().__init__([(module, "pre", self._adder(i)) for i, module in enumerate(head_out)])

    def _adder(self, i: int):
        def add(module, args):
            z = args[0].double()
            m = self.mask.to(z.dtype)[..., None]
            total = (z * m).sum(dim=(0, 1))
            self.sums[i] = total if self.sums[i] is None else self.sums[i] + total

        return add

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
    return np.array(
        [float(F.cross_entropy(logits, labels, reduction="sum")), float((logits.argmax(-1) == labels).sum())]
    )


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


def ablation_plans(modes: Iterable[str], n_heads: int, means, block: int) -> list[tuple[str, int, object]]:
    out = []
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"ablation mode {mode!r}; known: {', '.join(MODES)}")
        for head in range(n_heads):
            out.append((mode, head, None if mode == "zero" else means[block][head]))
    return out


class EffectSums:
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

    n_heads = heads_of(model.config)
    with torch.inference_mode(), HeadMeans(model.base_model, n_heads) as acc:
        for _, inputs in batches(docs, batch_size, pad_id, length_order(docs)):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            acc.mask = inputs["attention_mask"]
            model(**inputs)
            acc.update_count()
    return acc.means()


def head_effects(
    model,
    docs: Documents,
    measure: Measure,
    modes,
    means,
    batch_size: int,
    max_rows: int,
    pad_id: int,
    device,
    progress: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sums of `measure` clean, shape (n_metrics,), and with each head ablated, shape
    (n_modes, n_blocks, n_heads, n_metrics). `means` (from `head_means`) is needed for mode "mean";
    at most `max_rows` rows (documents x copies) run in one forward."""
    import torch

    base = model.base_model
    where = locate(base)
    n_blocks, n_heads = len(where.blocks), heads_of(model.config)
    modes = list(modes)
    sums = EffectSums((len(modes), n_blocks, n_heads))
    with torch.inference_mode():
        for step, (idx, inputs, labels) in enumerate(labelled_batches(docs, batch_size, pad_id, device)):
            with BlockInputs(base) as cache:
                sums.add_clean(measure(model(**inputs).logits, inputs, labels))
            rows = len(idx)
            per_forward = max(1, max_rows // rows)
            for block in range(n_blocks):
                plans = ablation_plans(modes, n_heads, means, block)
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
                        sums.ablated[modes.index(mode), block, head] += measure(
                            logits[j * rows : (j + 1) * rows], part, labels
                        )
            if progress:
                progress(f"batch {step + 1}: {rows} documents, {n_blocks * n_heads * len(modes)} ablations")
    return sums.clean, sums.ablated


# ---------------------------------------------------------------- rows


def ablation_rows(measure: str, modes: list[str], clean: np.ndarray, ablated: np.ndarray, n: float) -> list[dict]:
    """Long rows (measure, mode, 1-based layer, head, loss, accuracy and their change from the clean
    run) from the sums of `head_effects`; `n`: the documents or tokens they are sums over."""
    clean_loss = clean[0] / n
    clean_acc = clean[1] / n if measure == "task" else None
    rows = []
    for m, mode in enumerate(modes):
        for block in range(ablated.shape[1]):
            for head in range(ablated.shape[2]):
                loss = ablated[m, block, head, 0] / n
                acc = ablated[m, block, head, 1] / n if measure == "task" else None
                rows.append(
                    {
                        "measure": measure,
                        "mode": mode,
                        "layer": block + 1,
                        "head": head,
                        "loss": float(loss),
                        "delta_loss": float(loss - clean_loss),
                        "accuracy": None if acc is None else float(acc),
                        "delta_accuracy": None if acc is None else float(acc - clean_acc),
                    }
                )
    return rows


def _progress(measure: str):
    return lambda message: log.info("%s ablations: %s", measure, message)


def task_ablations(model, docs: Documents, modes: list, means, cfg: dict, pad_id: int, device) -> tuple[list, dict]:
    """Every head ablated on a sequence classifier: long rows and the clean loss and accuracy (means
    over documents). `cfg`: batch_size, max_rows (of `head_effects`)."""
    clean, ablated = head_effects(
        model, docs, task_measure, modes, means, cfg["batch_size"], cfg["max_rows"], pad_id, device, _progress("task")
    )
    n = len(docs.labels)
    metrics = {"loss": float(clean[0] / n), "accuracy": float(clean[1] / n)}
    message = "task: clean loss %.4f, accuracy %.3f; every head x %d modes ablated"
    log.info(message, metrics["loss"], metrics["accuracy"], len(modes))
    return ablation_rows("task", modes, clean, ablated, n), metrics


def lm_ablations(lm, docs: Documents, modes: list, cfg: dict, pad_id: int, device) -> tuple[list, dict]:
    """Every head ablated on a causal LM (next-token loss, the LM's own head means for mode "mean"):
    long rows and the clean loss (mean over predicted tokens) and token count."""
    means = head_means(lm, docs, cfg["batch_size"], pad_id, device) if "mean" in modes else None
    clean, ablated = head_effects(
        lm, docs, lm_measure, modes, means, cfg["batch_size"], cfg["max_rows"], pad_id, device, _progress("lm")
    )
    n = max(clean[1], 1)
    metrics = {"loss": float(clean[0] / n), "tokens": int(clean[1])}
    message = "lm: clean loss %.4f over %d tokens; every head x %d modes ablated"
    log.info(message, metrics["loss"], metrics["tokens"], len(modes))
    return ablation_rows("lm", modes, clean, ablated, n), metrics
