"""Language-model losses on a tokens table: which positions a causal or masked LM predicts, and
its per-token loss. Fine-tuning (its before/after test loss), the variants' LM comparison and
the spliced-SAE downstream loss all score an LM this way.

A causal LM predicts every real token from the ones before it (position t's logits score token
t + 1). A masked LM predicts a fixed `MASK_FRACTION` of each document's real, non-special
tokens (at least one), chosen per document by a seed, replaced by the mask token: the same
positions for every model and every run, so two models' losses and predictions compare token
by token.
"""

from __future__ import annotations

import functools

import numpy as np

MASK_FRACTION = 0.15


def masked_positions(docs, idx, width: int, seed: int = 0):
    """(batch, width) bool: the tokens a masked-LM loss predicts, fixed per document (seeded by
    its position): `MASK_FRACTION` of its real, non-special tokens, at least one."""
    import torch

    out = np.zeros((len(idx), width), dtype=bool)
    for j, i in enumerate(idx):
        candidates = np.flatnonzero(~docs.special[i].astype(bool))
        if len(candidates) == 0:
            continue
        rng = np.random.default_rng([seed, int(i)])
        n = max(1, round(MASK_FRACTION * len(candidates)))
        out[j, rng.choice(candidates, n, replace=False)] = True
    return torch.from_numpy(out)


class Scored:
    """What an LM is scored on in one batch: the (possibly masked) inputs, the positions whose
    logits are scored (`at`, on the logits' grid), the target token of each and, for causal
    LMs, the position in the document of the token predicted."""

    def __init__(self, docs, idx, inputs: dict, kind: str, mask_id: int | None):
        ids, attention = inputs["input_ids"], inputs["attention_mask"]
        if kind == "causal":
            self.at = attention.bool().clone()
            self.at[:, -1] = False
            self.at[:, :-1] &= attention[:, 1:].bool()
            self.targets = ids[:, 1:][self.at[:, :-1]]
            self.inputs = inputs
            self.target_pos = self.at.nonzero()[:, 1] + 1
        else:
            if mask_id is None:
                raise ValueError("a masked LM needs a tokenizer with a mask token")
            self.at = masked_positions(docs, idx, ids.shape[1]).to(ids.device)
            self.targets = ids[self.at]
            self.inputs = {**inputs, "input_ids": ids.masked_fill(self.at, mask_id)}
            self.target_pos = self.at.nonzero()[:, 1]
        self.rows = self.at.nonzero()[:, 0]  # batch row of each scored position

    def log_probs(self, logits):
        """(n_scored, vocab) float32 log-probabilities at the scored positions."""
        return logits[self.at].float().log_softmax(-1)

    def losses(self, logits):
        """Per scored position: the negative log-likelihood of its target."""
        return -self.log_probs(logits).gather(1, self.targets[:, None])[:, 0]


def mean_loss(
    model, docs, kind: str, batch_size: int, pad_id: int, mask_id: int | None, device, amp_dtype=None
) -> dict:
    """Mean next-token (causal) or masked-token (masked) loss over `docs`, and its perplexity."""
    import math

    import torch

    from workflow.store.tokens import labelled_batches

    model.eval()
    total, n = 0.0, 0
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for idx, inputs, _ in labelled_batches(docs, batch_size, pad_id, device):
            scored = Scored(docs, idx, inputs, kind, mask_id)
            total += float(scored.losses(model(**scored.inputs).logits).sum())
            n += len(scored.targets)
    loss = total / max(n, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "n_tokens": n}


def _split_head(model):
    """(body, head, softcap) of a causal LM whose logits are `head(body(...).last_hidden_state)`,
    optionally soft-capped (Gemma 2/3: ``cap * tanh(logits / cap)``); None where the head is not
    a plain linear layer (a LoRA-wrapped or otherwise custom head)."""
    import torch

    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    body = getattr(hf, "base_model", None)
    if type(head) is not torch.nn.Linear or body is None or body is hf:
        return None
    config = hf.config
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in ("logit_scale", "logits_scaling")):
        return None
    return body, head, getattr(config, "final_logit_softcapping", None)


@functools.cache
def _linear_cross_entropy():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """Mean cross-entropy of `hidden @ weight.T (+ bias)` against `targets`, in chunks of rows:
        the (tokens x vocab) logits are never held whole, and the gradients are computed in the
        forward pass, chunk by chunk (softmax minus one-hot, through the optional soft cap)."""

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, softcap, chunk):
            n = max(int(targets.numel()), 1)
            grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
            grad_b = torch.zeros_like(bias, dtype=torch.float32) if ctx.needs_input_grad[2] else None
            total = hidden.new_zeros((), dtype=torch.float32)
            for start in range(0, hidden.shape[0], chunk):
                h, t = hidden[start : start + chunk], targets[start : start + chunk]
                z = torch.nn.functional.linear(h, weight, bias).float()
                if softcap:
                    tanh = torch.tanh(z / softcap)
                    z = softcap * tanh
                lse = torch.logsumexp(z, -1)
                total += (lse - z.gather(1, t[:, None])[:, 0]).sum()
                g = torch.exp_(z.sub_(lse[:, None]))  # softmax, in place of the logits
                g[torch.arange(len(t), device=g.device), t] -= 1
                if softcap:
                    g.mul_(1 - tanh.square_())
                g.div_(n)
                if grad_b is not None:
                    grad_b += g.sum(0)
                g = g.to(h.dtype)
                if grad_h is not None:
                    grad_h[start : start + chunk] = g @ weight.to(h.dtype)
                if grad_w is not None and g.dtype == torch.float32:
                    grad_w.addmm_(g.t(), h)
                elif grad_w is not None:
                    grad_w += (g.t() @ h).float()
            ctx.save_for_backward(*(x if x is not None else torch.empty(0) for x in (grad_h, grad_w, grad_b)))
            ctx.has = (grad_h is not None, grad_w is not None, grad_b is not None)
            ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
            return total / n

        @staticmethod
        def backward(ctx, grad_out):
            grad_h, grad_w, grad_b = ctx.saved_tensors
            has_h, has_w, has_b = ctx.has
            return (
                grad_h * grad_out.to(grad_h.dtype) if has_h else None,
                (grad_w * grad_out).to(ctx.dtypes[0]) if has_w else None,
                (grad_b * grad_out).to(ctx.dtypes[1]) if has_b else None,
                None,
                None,
                None,
            )

    return LinearCrossEntropy


CE_CHUNK = 2**24  # logits (tokens x vocab) computed at once by `next_token_loss`: 64 MB in float32


def next_token_loss(model, inputs, chunk: int = CE_CHUNK):
    """Mean cross-entropy of every real token but the first, predicted from the ones before it.

    Where the LM head is a plain linear layer (every causal family here; LoRA on the blocks
    included), the head and the loss are fused: only the positions that predict a real token are
    scored, in chunks, and the (tokens x vocab) logits are never held whole, which is faster and
    lighter than `model(..., labels=...)` and gives the same loss and gradients. Otherwise, the
    model's logits, with the targets shifted (not the logits, so no copy of them is made)."""
    import torch.nn.functional as F

    ids, attention = inputs["input_ids"], inputs["attention_mask"]
    targets = F.pad(ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100), (0, 1), value=-100)
    split = _split_head(model)
    if split is None:
        logits = model(**inputs).logits
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)
    body, head, softcap = split
    hidden = body(**inputs).last_hidden_state
    keep = targets != -100
    rows = max(1, chunk // head.weight.shape[0])
    return _linear_cross_entropy().apply(hidden[keep], head.weight, head.bias, targets[keep], softcap, rows)
