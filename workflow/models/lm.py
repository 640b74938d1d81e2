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
