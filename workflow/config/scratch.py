"""Config validation of models of source ``scratch`` (a part of `workflow.config`): which datasets a
scratch model is studied on (boards its tokenizer and positions cover), and its config.json built
in memory from its ``scratch`` block, so depth, width and positions are checked before it exists.
"""

from __future__ import annotations

from workflow import layout
from workflow.datasets import boards

SCRATCH = "scratch"  # the model source of a transformer trained here from random weights


def check_model_datasets(cfg: dict, name: str, spec: dict, problems: list[str]) -> None:
    """`models.<name>.datasets`: the study's own datasets; fills in the list (null: every dataset, or
    for a scratch model every boards dataset its tokenizer covers but its corpus: the model was
    trained there, and stage emergence studies it on its corpus)."""
    where = f"models.{name}.datasets"
    if spec.get("datasets") is not None:
        unknown = [d for d in spec["datasets"] if d not in cfg["datasets"]]
        if unknown:
            problems.append(f"{where}: {unknown} not in the study's datasets ({', '.join(cfg['datasets'])})")
        return
    if spec["source"] != SCRATCH or "scratch" not in spec:
        spec["datasets"] = list(cfg["datasets"])
        return
    corpus = cfg["datasets"].get(spec["scratch"]["corpus"])
    spec["datasets"] = [
        d
        for d, ds in cfg["datasets"].items()
        if corpus is not None
        and d != spec["scratch"]["corpus"]
        and ds["source"] == corpus["source"] == "abstractions"
        and same_boards(ds, corpus)
    ]


def same_boards(a: dict, b: dict) -> bool:
    """Whether two boards datasets show the same tokens on the same grid (one tokenizer and position table)."""
    pa, pb = boards.params(a), boards.params(b)
    return all(pa[k] == pb[k] for k in ("board_dim", "vocab_bck", "vocab_token"))


def scratch_config(cfg: dict, name: str, spec: dict, given: set, problems: list[str]) -> dict | None:
    """A scratch model's config.json (as a dict, before the model exists), after its checks. Sets the
    model's source to the trained folder, ``scratch_vocab`` and ``board_dim``, and a masked_lm /
    causal_lm fine-tune (the model's own objective) unless the finetuned kind is given."""
    from workflow.datasets import abstractions
    from workflow.models import scratch

    where = f"models.{name}"
    if "scratch" not in spec:
        problems.append(f"{where}: source scratch needs a scratch block (family, corpus, layers, d_model, heads)")
        return None
    corpus_name = spec["scratch"]["corpus"]
    corpus = cfg["datasets"].get(corpus_name)
    if corpus is None or corpus["source"] != "abstractions":
        corpora = [d for d, ds in cfg["datasets"].items() if ds["source"] == "abstractions"]
        problems.append(
            f"{where}.scratch.corpus: {corpus_name!r} is not a dataset of source abstractions "
            f"(the study's: {', '.join(corpora) or 'none'})"
        )
        return None
    bad = [
        d
        for d in spec["datasets"]
        if d in cfg["datasets"]
        and (cfg["datasets"][d]["source"] != "abstractions" or not same_boards(cfg["datasets"][d], corpus))
    ]
    if bad:
        problems.append(
            f"{where}.datasets: {bad} are not boards of {corpus_name!r}'s board_dim, vocab_bck and vocab_token; "
            "a scratch model's tokenizer and positions cover those only"
        )
    problems += scratch.check(spec, where)
    if spec["chat_template"]:
        problems.append(f"{where}.chat_template: a scratch model's tokenizer has no chat template")
    board = boards.params(corpus)
    spec["scratch_vocab"] = abstractions.vocabulary(board)
    spec["board_dim"] = board["board_dim"]
    spec["source"] = layout.SCRATCH.file("final", model=name)
    if "kind" not in given:
        spec["finetuned"]["kind"] = (
            "masked_lm" if scratch.objective(spec["scratch"]["family"]) == "masked" else "causal_lm"
        )
    return scratch.model_config(spec, spec["scratch_vocab"], board["board_dim"] ** 2)
