"""Datasets: built-in generators, packaged and local files, Hugging Face ids, and boards with known
abstractions, each turned into train and test tables of ``text``, ``label`` and optional ``spans``."""

import polars as pl

# planted concepts as character spans of a document's text
SPAN_TYPE = pl.List(pl.Struct({"start": pl.Int64, "end": pl.Int64, "concept": pl.Utf8}))
