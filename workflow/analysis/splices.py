"""What an SAE's reconstruction error costs downstream, measured by splicing it in.

A model is run clean, with the (site, layer) activation zero-ablated, and with
each SAE's reconstruction spliced in at that place (`workflow.models.hooks.Splice`).
``loss_recovered`` = (L_zero - L_spliced) / (L_zero - L_clean); ``kl`` is the mean
KL(clean || spliced) of the output distributions, ``kl_zero`` the same for the
zero-ablated run and ``kl_recovered`` = (KL_zero - KL_spliced) / KL_zero. These are
SAEBench's core downstream metrics (its ``ce_loss_score`` and ``kl_div_score``).
`task_effects` scores a sequence classifier (cross-entropy and accuracy per
document), `lm_effects` a language model: a causal LM by next-token loss per
predicted token, a masked LM by masked-token loss on fixed positions of each
document (`workflow.models.lm`).
Positions whose activation norm exceeds `max_norm` (outlier tokens), if given, keep
their clean value when spliced or ablated.

A crosscoder is spliced in one side at a time (`CrosscoderSide`): its encoder reads both
variants' activations of the same tokens, so the other variant's model (the partner) is run on
the same inputs first and its activation at the (site, layer) captured; the spliced variant's
activation is then replaced by that side's decoder output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from workflow.layout import VARIANTS
from workflow.models import loading
from workflow.models.hooks import Capture, Splice
from workflow.models.lm import Scored
from workflow.models.sources import resolve_source
from workflow.store.tokens import labelled_batches

log = logging.getLogger(__name__)


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


class CrosscoderSide:
    """One side of a crosscoder as an SAE for `through_sae`: `prepare(inputs)` runs the partner
    (the other variant's model, whose activations are the crosscoder's other input) on the same
    inputs and keeps its (site, layer) activation; calling it on the spliced variant's flattened
    activation gives that side's reconstruction from both."""

    def __init__(self, cc, side: int, partner, site: str, layer: int):
        self.cc, self.side, self.partner, self.where = cc, side, partner, (site, layer)
        self.other = None

    def prepare(self, inputs: dict) -> None:
        with Capture(self.partner.base_model, [self.where]) as capture:
            self.other = capture.run(**inputs)[self.where]

    def __call__(self, flat):
        import torch

        other = self.other.reshape(flat.shape).float()
        pair = (flat, other) if self.side == 0 else (other, flat)
        acts = self.cc.encode(torch.cat(pair, dim=1))  # raw in, raw out: the scale is applied inside
        return self.cc.decode_side(acts, self.side)


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
        if hasattr(sae, "prepare"):  # a crosscoder side: its partner's activation of these inputs
            sae.prepare(inputs)
        with Splice(base, site, layer, through_sae(sae, max_norm)):
            runs[f"spliced:{name}"] = model(**inputs).logits.float()
    return runs


def _add(sums: dict, key: str, value: float) -> None:
    sums[key] = sums.get(key, 0.0) + value


def _recovered(zero: float, spliced: float, clean: float) -> float:
    gap = zero - clean
    return (zero - spliced) / gap if abs(gap) > 1e-12 else float("nan")


def _summaries(sums: dict, names, n: int) -> dict:
    """Per SAE: mean clean / spliced / zero losses (and accuracies, KL), loss and KL recovered."""
    out = {}
    for name in names:
        mean = {k.replace(f":{name}", ""): v / n for k, v in sums.items() if ":" not in k or k.endswith(f":{name}")}
        mean["loss_recovered"] = _recovered(mean["loss_zero"], mean["loss_spliced"], mean["loss_clean"])
        mean["kl_recovered"] = _recovered(mean["kl_zero"], mean["kl"], 0.0)
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
        if kind != "clean":
            kl = float(F.kl_div(log_probs(values), clean, log_target=True, reduction="sum"))
            _add(sums, f"kl:{name}" if name else f"kl_{kind}", kl)


def classifier(classifier_dir: str, device):
    """A saved task classifier, in eval mode."""
    pad_id = loading.pad_token_id(classifier_dir)
    return loading.load_classifier(classifier_dir, loading.num_labels(classifier_dir), pad_id, device).eval()


def language_model(lm: dict, device):
    """The language model of an `lm` spec (`Plan.lm_spec`: source, kind, body), in eval mode."""
    return loading.load_lm(resolve_source(lm["source"]), device, lm["kind"], lm.get("body"))


def task_effects(
    classifier_dir: str, docs, site: str, layer: int, saes: dict, batch_size: int, device, max_norm: float | None = None
) -> dict:
    """Task loss and accuracy of a classifier clean, zero-ablated and with each SAE of `saes` spliced in."""
    import torch
    import torch.nn.functional as F

    pad_id = loading.pad_token_id(classifier_dir)
    model = classifier(classifier_dir, device)
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
    lm: dict, docs, site: str, layer: int, saes: dict, batch_size: int, device, max_norm: float | None = None
) -> dict:
    """LM loss clean, zero-ablated and with each SAE spliced in. `lm`: `Plan.lm_spec` (source, kind,
    body): next-token loss of a causal LM, or masked-token loss of a masked LM."""
    import torch
    import torch.nn.functional as F

    source, kind = resolve_source(lm["source"]), lm["kind"]
    pad_id = loading.pad_token_id(source)
    model = language_model(lm, device)
    mask_id = loading.load_tokenizer(source).mask_token_id if kind == "masked" else None
    sums: dict[str, float] = {}
    n = 0
    with torch.inference_mode():
        for idx, inputs, _ in labelled_batches(docs, batch_size, pad_id, device):
            scored = Scored(docs, idx, inputs, kind, mask_id)
            runs = _spliced_runs(model, site, layer, saes, scored.inputs, max_norm)
            logp = {k: scored.log_probs(v) for k, v in runs.items()}
            _add_runs(sums, logp, lambda lp, t=scored.targets: float(F.nll_loss(lp, t, reduction="sum")))
            n += len(scored.targets)
    return {
        name: {"model": source, "body": lm.get("body"), "kind": kind, **summary, "n_tokens": n}
        for name, summary in _summaries(sums, saes, max(n, 1)).items()
    }


def crosscoder_effects(
    cc, docs, site: str, layer: int, classifiers: dict, lm_specs: dict, batch_size: int, device
) -> dict:
    """Each side of a crosscoder spliced into its own variant: {variant: {"task": ..., "lm": ...}},
    as `task_effects` / `lm_effects` give them ("task" where both variants have a task classifier,
    "lm" where both have a language model). `classifiers`, `lm_specs`: {variant: folder / spec}.
    Side i is VARIANTS[i], as the crosscoder orders its sides."""
    out = {}
    for side, variant in enumerate(VARIANTS):
        partner, result = VARIANTS[1 - side], {}
        if classifiers.get(variant) and classifiers.get(partner):
            spliced = CrosscoderSide(cc, side, classifier(classifiers[partner], device), site, layer)
            result["task"] = task_effects(classifiers[variant], docs, site, layer, {"cc": spliced}, batch_size, device)[
                "cc"
            ]
        if lm_specs.get(variant) and lm_specs.get(partner):
            spliced = CrosscoderSide(cc, side, language_model(lm_specs[partner], device), site, layer)
            result["lm"] = lm_effects(lm_specs[variant], docs, site, layer, {"cc": spliced}, batch_size, device)["cc"]
        out[variant] = result
        for what, e in result.items():
            log.info(
                "%s side spliced into the %s model: %s loss clean %.4f spliced %.4f zero %.4f -> recovered %.3f",
                variant,
                variant,
                what,
                e["loss_clean"],
                e["loss_spliced"],
                e["loss_zero"],
                e["loss_recovered"],
            )
    return out
