"""What an SAE's reconstruction error costs downstream, measured by splicing it in.

A model is run clean, with the (site, layer) activation zero-ablated, and with
each SAE's reconstruction spliced in at that place (`workflow.models.hooks.Splice`).
``loss_recovered`` = (L_zero - L_spliced) / (L_zero - L_clean); ``kl`` is the mean
KL(clean || spliced) of the output distributions. `task_effects` scores a sequence
classifier (cross-entropy and accuracy per document), `lm_effects` a causal LM
(next-token loss per predicted token). Positions whose activation norm exceeds
`max_norm` (outlier tokens), if given, keep their clean value when spliced or ablated.
"""

from __future__ import annotations

from collections.abc import Callable

from workflow.models import loading
from workflow.models.hooks import Splice
from workflow.store.tokens import labelled_batches


def through_sae(sae, max_norm: float | None = None) -> Callable:
    """fn for `Splice`: the SAE's reconstruction of every position; positions whose
    activation norm exceeds `max_norm` (outlier tokens) keep their clean value."""
    import torch

    def fn(acts):
        shape = acts.shape
        flat = acts.reshape(-1, shape[-1]).float()
        out = sae(flat)
        if max_norm is not None:
            out = torch.where((flat.norm(dim=1) > max_norm)[:, None], flat, out)
        return out.reshape(shape).to(acts.dtype)

    return fn


def zeros(acts):
    return acts.new_zeros(acts.shape)


def zeros_except_outliers(max_norm: float | None) -> Callable:
    """fn for `Splice`: zero ablation of the positions `through_sae(sae, max_norm)` replaces."""
    if max_norm is None:
        return zeros

    def fn(acts):
        return acts * (acts.float().norm(dim=-1, keepdim=True) > max_norm).to(acts.dtype)

    return fn


def _spliced_runs(model, site: str, layer: int, saes: dict, inputs: dict, max_norm: float | None) -> dict:
    """Logits clean, zero-ablated and with each SAE spliced in ("spliced:<name>")."""
    base = model.base_model
    runs = {"clean": model(**inputs).logits.float()}
    with Splice(base, site, layer, zeros_except_outliers(max_norm)):
        runs["zero"] = model(**inputs).logits.float()
    for name, sae in saes.items():
        with Splice(base, site, layer, through_sae(sae, max_norm)):
            runs[f"spliced:{name}"] = model(**inputs).logits.float()
    return runs


def _add(sums: dict, key: str, value: float) -> None:
    sums[key] = sums.get(key, 0.0) + value


def _summaries(sums: dict, names, n: int) -> dict:
    """Per SAE: mean clean / spliced / zero losses (and accuracies, KL), and loss recovered."""
    out = {}
    for name in names:
        mean = {k.replace(f":{name}", ""): v / n for k, v in sums.items() if ":" not in k or k.endswith(f":{name}")}
        gap = mean["loss_zero"] - mean["loss_clean"]
        mean["loss_recovered"] = (mean["loss_zero"] - mean["loss_spliced"]) / gap if abs(gap) > 1e-12 else float("nan")
        out[name] = mean
    return out


def _add_runs(
    sums: dict, runs: dict, loss: Callable, extra: Callable | None = None, log_probs: Callable = lambda values: values
) -> None:
    """Add each run's summed loss (and `extra` metrics), and each spliced run's summed KL to the
    clean run. `runs`: {name: outputs}; `loss(outputs)` and `extra(outputs)` give sums, and
    `log_probs(outputs)` the log-probabilities the KL compares."""
    import torch.nn.functional as F

    clean = log_probs(runs["clean"])
    for run_name, values in runs.items():
        kind, _, name = run_name.partition(":")
        suffix = f":{name}" if name else ""
        _add(sums, f"loss_{kind}{suffix}", loss(values))
        for metric, value in (extra(values) if extra else {}).items():
            _add(sums, f"{metric}_{kind}{suffix}", value)
        if name:
            _add(sums, f"kl:{name}", float(F.kl_div(log_probs(values), clean, log_target=True, reduction="sum")))


def task_effects(
    classifier_dir: str, docs, site: str, layer: int, saes: dict, batch_size: int, device, max_norm: float | None = None
) -> dict:
    """Task loss and accuracy of a classifier clean, zero-ablated and with each SAE of `saes` spliced in."""
    import torch
    import torch.nn.functional as F

    pad_id = loading.pad_token_id(classifier_dir)
    model = loading.load_classifier(classifier_dir, loading.num_labels(classifier_dir), pad_id, device).eval()
    sums: dict[str, float] = {}
    with torch.inference_mode():
        for _, inputs, labels in labelled_batches(docs, batch_size, pad_id, device):
            runs = _spliced_runs(model, site, layer, saes, inputs, max_norm)
            _add_runs(
                sums,
                runs,
                lambda logits, labels=labels: float(F.cross_entropy(logits, labels, reduction="sum")),
                lambda logits, labels=labels: {"accuracy": float((logits.argmax(-1) == labels).sum())},
                lambda logits: logits.log_softmax(-1),
            )
    n = len(docs.labels)
    return {
        name: {"model": classifier_dir, **summary, "n_docs": int(n)}
        for name, summary in _summaries(sums, saes, n).items()
    }


def lm_effects(
    source: str, docs, site: str, layer: int, saes: dict, batch_size: int, device, max_norm: float | None = None
) -> dict:
    """Next-token loss of a causal LM (GPT-2 family) clean, zero-ablated and with each SAE spliced in."""
    import torch
    import torch.nn.functional as F

    pad_id = loading.pad_token_id(source)
    model = loading.load_lm(source, device)
    sums: dict[str, float] = {}
    n = 0
    with torch.inference_mode():
        for _, inputs, _ in labelled_batches(docs, batch_size, pad_id, device):
            mask = inputs["attention_mask"][:, 1:].bool()
            targets = inputs["input_ids"][:, 1:][mask]
            runs = _spliced_runs(model, site, layer, saes, inputs, max_norm)
            logp = {k: v[:, :-1][mask].log_softmax(-1) for k, v in runs.items()}
            _add_runs(sums, logp, lambda lp, targets=targets: float(F.nll_loss(lp, targets, reduction="sum")))
            n += int(mask.sum())
    return {
        name: {"model": source, **summary, "n_tokens": n} for name, summary in _summaries(sums, saes, max(n, 1)).items()
    }
