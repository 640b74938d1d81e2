"""The data files of the report's feature pages and sentence view, and the SAE catalogue both pages read.

Per (model, dataset) report folder::

    data/features/<key>/index.js the SAE's feature list (id, frequency, best class, top tokens, category)
    data/features/<key>/c<n>.js  features n*CHUNK .. (n+1)*CHUNK-1: every statistic of features.parquet,
                                 the activation histogram, the top and quantile examples with the
                                 activation of every token, and the diff match (partner, category)
    data/sentences.js            every token of the first test documents with the features firing on it,
                                 per SAE

`<key>` is ``<variant>-<site>-L<layer>-<recipe>``, from the SAE's eval.json. A crosscoder is listed
twice on the feature pages, once per side (``<variant>-<site>-L<layer>-crosscoder.<recipe>``, partner
the other side): each latent is shown on both variants, with both decoders' norms and its examples
shaded by that variant's contribution to the latent (the sentence view shows SAEs only). Data files are
JavaScript that hand their payload to ``reportData(name, payload)`` (static/loader.js): browsers
refuse ``fetch`` of local JSON from ``file://`` pages, but load local scripts, so a page loads only
the chunk it shows. JSON has no NaN: missing values are null.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from workflow import layout
from workflow.report.rows import VARIANT_ORDER
from workflow.store.files import json_safe, nan_to_null, read_json

CHUNK = 32  # features per data file
EXAMPLE_COLUMNS = ["feature", "kind", "rank", "doc_id", "activation", "center", "tokens", "acts"]
FEATURES_DIR = "data/features"
SENTENCES = "data/sentences.js"
CATALOGUE_KEYS = (
    "key",
    "recipe",
    "architecture",
    "site",
    "layer",
    "variant",
    "d_sae",
    "fvu",
    "l0",
    "dead",
    "labels",
    "concepts",
    "partner_key",
    "n_chunks",
    "default_feature",
    "crosscoder",
)


def sae_key(e: dict) -> str:
    """The feature pages' name of an SAE (an eval.json or catalogue entry with variant, site, layer, sae)."""
    return f"{e['variant']}-{e['site']}-L{e['layer']}-{e['sae']}"


def sae_entry(folder: str, evaluation: dict, features: dict) -> dict:
    """The catalogue entry of one SAE folder, from its eval.json and features.json."""
    return {
        "key": sae_key(evaluation),
        "folder": str(folder),
        "recipe": evaluation["sae"],
        "architecture": evaluation["architecture"],
        "site": evaluation["site"],
        "layer": evaluation["layer"],
        "variant": evaluation["variant"],
        "d_sae": evaluation["d_sae"],
        "fvu": evaluation["fvu"],
        "l0": evaluation["l0"],
        "dead": evaluation["dead_fraction"],
        "labels": features["label_names"],
        "concepts": features["concepts"],
        "best": features["best_feature_per_concept"],
        "eval": evaluation,
    }


def describe_saes(sae_dirs: list[str]) -> list[dict]:
    """One catalogue entry per SAE folder: the recipe with most SAEs first, then by recipe, site, layer and
    variant; each names the other variant's SAE of its (recipe, site, layer) and its number of data files."""
    names = layout.SAE.names
    entries = [
        json_safe(sae_entry(d, read_json(Path(d) / names["eval"]), read_json(Path(d) / names["features_summary"])))
        for d in sae_dirs
    ]
    per_recipe = {r: sum(s["recipe"] == r for s in entries) for r in {s["recipe"] for s in entries}}
    entries.sort(
        key=lambda s: (-per_recipe[s["recipe"]], s["recipe"], s["site"], s["layer"], VARIANT_ORDER.get(s["variant"], 2))
    )
    by_place: dict[tuple, dict] = {}
    for s in entries:
        by_place.setdefault((s["recipe"], s["site"], s["layer"]), {})[s["variant"]] = s["key"]
    for s in entries:
        others = by_place[(s["recipe"], s["site"], s["layer"])]
        s["partner_key"] = next((k for v, k in others.items() if v != s["variant"]), None)
        s["n_chunks"] = -(-s["d_sae"] // CHUNK)
    return entries


def describe_crosscoders(folders: list[str]) -> list[dict]:
    """Two catalogue entries per crosscoder folder, one per side (variant), each the other's partner."""
    out = []
    for d in folders:
        names = layout.CROSSCODER.names
        summary, features = read_json(Path(d) / names["summary"]), read_json(Path(d) / names["features_summary"])
        keys = {
            v: f"{v}-{summary['site']}-L{summary['layer']}-{layout.CROSSCODER_PREFIX}{summary['crosscoder']}"
            for v in VARIANT_ORDER
        }
        for v, key in keys.items():
            out.append(
                json_safe(
                    {
                        "key": key,
                        "folder": str(d),
                        "recipe": layout.CROSSCODER_PREFIX + summary["crosscoder"],
                        "architecture": "crosscoder",
                        "site": summary["site"],
                        "layer": summary["layer"],
                        "variant": v,
                        "d_sae": summary["d_sae"],
                        "fvu": summary["fvu"][v],
                        "l0": summary["l0"],
                        "dead": summary["dead_fraction"],
                        "labels": features["label_names"],
                        "concepts": features["concepts"],
                        "partner_key": next(k for w, k in keys.items() if w != v),
                        "n_chunks": -(-summary["d_sae"] // CHUNK),
                        "crosscoder": True,
                    }
                )
            )
    return out


def catalogue(saes: list[dict]) -> list[dict]:
    """What the pages' scripts read of each SAE (embedded in the page)."""
    return [{k: s.get(k) for k in CATALOGUE_KEYS} for s in saes]


def diff_match(diff: pl.DataFrame) -> pl.DataFrame:
    """Each feature's match under the diff (one side of diff.parquet): partner, category, scores."""
    return diff.select(
        "feature",
        pl.struct("partner", "category", "decoder_cos", "act_corr", "best_cos", "delta_frequency").alias("match"),
    )


def crosscoder_match(latents: pl.DataFrame) -> pl.DataFrame:
    """Each crosscoder latent matched to itself on the other side (latents.parquet): its class as the
    category, both decoders' norms and cosine, latent scaling."""
    return latents.select(
        pl.col("latent").alias("feature"),
        pl.struct(
            pl.col("latent").alias("partner"),
            pl.col("class").alias("category"),
            "decoder_cos",
            "norm_pretrained",
            "norm_finetuned",
            "relative_norm",
            "nu_error",
            "nu_reconstruction",
            "robust",
        ).alias("match"),
    )


def feature_records(
    folder: str | Path, labels: list[str], match: pl.DataFrame | None, acts: str = "acts"
) -> pl.DataFrame:
    """One row per feature (all of them, dead ones too, in id order) with its examples and its match
    (`diff_match`, `crosscoder_match`); the examples' token shading is column `acts` of examples.parquet."""
    names = layout.SAE.names  # a crosscoder folder names its feature tables the same
    folder = Path(folder)
    table = pl.read_parquet(folder / names["features"])
    examples = (
        pl.read_parquet(folder / names["examples"], columns=[c if c != "acts" else acts for c in EXAMPLE_COLUMNS])
        .rename({acts: "acts"} if acts != "acts" else {})
        .sort(["feature", "kind", "rank"], descending=[False, True, False])  # top before quantile
        .with_columns(pl.col("activation").round(4), pl.col("acts").list.eval(pl.element().round(3)))
        .group_by("feature", maintain_order=True)
        .agg(pl.struct(EXAMPLE_COLUMNS[1:]).alias("examples"))
    )
    records = table.with_columns(
        pl.col("best_class").replace_strict(dict(enumerate(labels)), default=None, return_dtype=pl.Utf8),
        pl.col("top_token_means").list.eval(pl.element().round(3)),
    ).join(examples, on="feature", how="left", maintain_order="left")
    records = records.with_columns(pl.col("examples").fill_null(pl.lit([], dtype=records.schema["examples"])))
    if match is not None:
        records = records.join(match, on="feature", how="left", maintain_order="left")
    return nan_to_null(records).sort("feature")


def feature_index(records: pl.DataFrame) -> dict:
    """The SAE's feature list, column-wise (small enough to load at once)."""
    top = records["top_tokens"].list.head(3).list.join(" ").fill_null("")
    out = {
        "feature": records["feature"].to_list(),
        "frequency": records["frequency"].round(6).to_list(),
        "max": records["max_activation"].round(3).to_list(),
        "best_class": records["best_class"].to_list(),
        "best_auroc": records["best_auroc"].round(3).to_list(),
        "top": top.to_list(),
    }
    if "match" in records.columns:
        out["category"] = records["match"].struct.field("category").to_list()
        out["partner"] = records["match"].struct.field("partner").to_list()
    return out


def data_script(name: str, payload_json: str) -> str:
    """A data file: JavaScript that hands `payload_json` to the page's ``reportData``."""
    return f"reportData({json.dumps(name)},{payload_json});\n"


def _as_json(obj) -> str:
    return json.dumps(json_safe(obj), allow_nan=False)


def default_feature(records: pl.DataFrame) -> int:
    """The feature a page opens on: the live feature most associated with a class."""
    live = records.filter(pl.col("n_active") > 0)
    if not len(live):
        return 0
    return int(live.sort("best_auroc", descending=True, nulls_last=True)["feature"][0])


def write_feature_data(saes: list[dict], diffs: dict[tuple, pl.DataFrame], out: Path) -> None:
    """data/features/<key>/{index.js, c<n>.js} for every SAE and crosscoder side, and each entry's
    `default_feature`; `diffs` maps (recipe, site, layer) to that diff's table (diff.parquet, one row
    per feature and side)."""
    for s in saes:
        if s.get("crosscoder"):
            latents = pl.read_parquet(Path(s["folder"]) / layout.CROSSCODER.names["latents"])
            records = feature_records(s["folder"], s["labels"], crosscoder_match(latents), f"acts_{s['variant']}")
        else:
            diff = diffs.get((s["recipe"], s["site"], s["layer"]))
            side = diff_match(diff.filter(pl.col("side") == s["variant"])) if diff is not None else None
            records = feature_records(s["folder"], s["labels"], side)
        folder = out / FEATURES_DIR / s["key"]
        folder.mkdir(parents=True, exist_ok=True)
        name = f"features/{s['key']}"
        (folder / "index.js").write_text(
            data_script(f"{name}/index", _as_json(feature_index(records))), encoding="utf-8"
        )
        lines = records.write_ndjson().splitlines()  # nan_to_null above: ndjson has no NaN
        for n in range(s["n_chunks"]):
            body = "[" + ",\n".join(lines[n * CHUNK : (n + 1) * CHUNK]) + "]"
            (folder / f"c{n}.js").write_text(data_script(f"{name}/c{n}", body), encoding="utf-8")
        s["default_feature"] = default_feature(records)


def sentence_data(saes: list[dict], max_top: int = 3) -> dict:
    """The documents of sentences.parquet (the same for every SAE) and, per SAE, the features on each token
    ([feature, activation], strongest first) and the top tokens of every feature that appears."""
    names = layout.SAE.names
    docs, per_sae, feature_names = [], {}, {}
    for s in saes:
        table = pl.read_parquet(Path(s["folder"]) / names["sentences"])
        parts = [part for _, part in table.group_by("doc_id", maintain_order=True)]
        if not docs:
            docs = [
                {
                    "doc_id": int(part["doc_id"][0]),
                    # unlabelled text has no label names (its label is -1 throughout)
                    "label": s["labels"][part["label"][0]] if 0 <= part["label"][0] < len(s["labels"]) else "",
                    "tokens": part["token"].to_list(),
                }
                for part in parts
            ]
        per_sae[s["key"]] = [
            [
                [[f, round(float(a), 3)] for f, a in zip(fs, acts)]
                for fs, acts in zip(part["features"].to_list(), part["acts"].to_list())
            ]
            for part in parts
        ]
        used = sorted({f for doc in per_sae[s["key"]] for tok in doc for f, _ in tok})
        top = pl.read_parquet(Path(s["folder"]) / names["features"], columns=["feature", "top_tokens"]).filter(
            pl.col("feature").is_in(used)
        )
        feature_names[s["key"]] = {str(f): " ".join((t or [])[:max_top]) for f, t in top.iter_rows()}
    return {"docs": docs, "features": per_sae, "names": feature_names}


def write_sentence_data(saes: list[dict], out: Path) -> dict:
    data = sentence_data(saes)
    (out / SENTENCES).parent.mkdir(parents=True, exist_ok=True)
    (out / SENTENCES).write_text(data_script("sentences", _as_json(data)), encoding="utf-8")
    return data
