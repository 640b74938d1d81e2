"""Stage `dataset`: one dataset as train/test Parquet tables plus metadata.

Tables follow the dataset contract: ``id`` (int, unique across splits),
``text``, ``label`` (int; -1 throughout for unlabelled text), ``spans``
(character spans of planted concepts) for built-in data, and ``response`` where
a response column is given. ``meta.json`` holds whether the dataset is
labelled, the label names, split sizes, class counts and a bag-of-words
logistic-regression baseline on the test split: a fine-tuned transformer
should beat it.
"""

from __future__ import annotations

import logging

import polars as pl

from workflow import layout
from workflow.datasets import sources
from workflow.datasets.baseline import bow_baseline
from workflow.runner import cli
from workflow.store.files import write_json, write_parquet

log = logging.getLogger(__name__)


def run(name: str, spec: dict, out_dir: str) -> dict:
    log.info("dataset %s: reading source %s", name, spec["source"])
    train, test, label_names = sources.LOADERS[spec["source"]](spec)
    train, test = sources.capped(train, test, spec)
    # config validation checks the sizes before the caps; this is after them
    sources.check_sizes(train, test, label_names, f"dataset {name!r} (max_train / max_test applied)")
    n_train = len(train)
    train = train.with_row_index("id").with_columns(pl.col("id").cast(pl.Int64))
    test = test.with_row_index("id", offset=n_train).with_columns(pl.col("id").cast(pl.Int64))
    is_labelled = bool(label_names)
    baseline = bow_baseline(train["text"], train["label"], test["text"], test["label"]) if is_labelled else None
    meta = {
        "name": name,
        "source": spec["source"],
        "labelled": is_labelled,
        "label_names": label_names,
        "n_train": len(train),
        "n_test": len(test),
        "class_counts": {
            split: {str(k): v for k, v in table["label"].value_counts().sort("label").iter_rows()}
            for split, table in (("train", train), ("test", test))
        }
        if is_labelled
        else None,
        "concepts": sources.concepts(spec),
        "generator": sources.generator_meta(spec),
        "bow_baseline": baseline,
        "spec": spec,
    }
    names = layout.DATA.names
    write_parquet(train, f"{out_dir}/{names['train']}")
    write_parquet(test, f"{out_dir}/{names['test']}")
    write_json(meta, f"{out_dir}/{names['meta']}")
    log.info(
        "dataset %s: %d train / %d test rows, %s",
        name,
        len(train),
        len(test),
        f"{len(label_names)} labels; bag-of-words baseline accuracy {baseline['accuracy']:.3f}"
        if is_labelled
        else "unlabelled text",
    )
    return meta


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--name", required=True)
    cli.add_config(parser, "dataset's config entry", "--spec")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.name, args.spec, args.out_dir)
