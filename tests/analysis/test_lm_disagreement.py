"""`workflow.analysis.lm_disagreement` on planted per-token scores: the token table's order and
contexts, each document's largest disagreement, and the summary's statistics."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from workflow.analysis.lm_disagreement import CONTEXT, documents, summarise, token_table
from workflow.store.tokens import Documents


class _Tokenizer:
    """Token id i is the word ``w<i>``; a string is its words joined by spaces."""

    def convert_ids_to_tokens(self, ids):
        return [f"w{i}" for i in ids]

    def convert_tokens_to_string(self, tokens):
        return " ".join(tokens)


def _docs() -> Documents:
    ids = [np.arange(100, 112), np.arange(200, 204)]
    offsets = np.array([0, 12, 16], dtype=np.int64)
    return Documents(ids, np.array([0, 1]), offsets, [np.zeros(12, bool), np.zeros(4, bool)], np.array([70, 80]))


def _cols() -> dict:
    """Four scored tokens in batch order (not document order): document 80 twice, document 70 twice."""
    return {
        "doc": np.array([1, 0, 1, 0]),
        "pos": np.array([3, 11, 1, 2]),
        "target": np.array([203, 111, 201, 102]),
        "loss_pretrained": np.array([1.0, 2.0, 3.0, 4.0]),
        "loss_finetuned": np.array([0.5, 2.5, 1.0, 4.0]),
        "top_pretrained": np.array([5, 6, 7, 8]),
        "top_finetuned": np.array([5, 9, 7, 8]),
        "kl": np.array([0.2, 0.9, 0.4, 0.0]),
    }


def test_the_token_table_is_in_document_order_with_its_left_context():
    table = token_table(_cols(), _docs(), _Tokenizer())
    assert table["doc_id"].to_list() == [70, 70, 80, 80] and table["pos"].to_list() == [2, 11, 1, 3]
    assert table["token"].to_list() == ["w102", "w111", "w201", "w203"]
    assert table["context"][0] == "w100 w101"  # everything before position 2
    assert table["context"][1] == " ".join(f"w{i}" for i in range(111 - CONTEXT, 111))  # the last CONTEXT tokens
    assert table["top_finetuned"].to_list() == ["w8", "w9", "w7", "w5"]
    assert table["kl"].dtype == pl.Float32 and table["pos"].dtype == pl.Int32


def test_documents_and_summary_report_the_largest_disagreements():
    table = token_table(_cols(), _docs(), _Tokenizer())
    docs = documents(table)
    assert docs["doc_id"].to_list() == [70, 80]  # mean KL 0.45 before 0.3
    assert docs["max_kl"].to_list() == pytest.approx([0.9, 0.4]) and docs["max_kl_token"].to_list() == ["w111", "w201"]
    assert docs["mean_kl"].to_list() == pytest.approx([0.45, 0.3])
    summary = summarise(table, docs, {"kind": "causal"}, n_top=1)
    assert summary["kind"] == "causal" and summary["n_tokens"] == 4
    assert summary["pretrained"]["loss"] == pytest.approx(2.5)
    assert summary["finetuned"]["perplexity"] == pytest.approx(math.exp(2.0))
    assert summary["loss_change"] == pytest.approx(-0.5)
    assert summary["kl"]["mean"] == pytest.approx(0.375) and summary["kl"]["max"] == pytest.approx(0.9)
    assert summary["kl"]["q50"] == pytest.approx(0.3)  # between 0.2 and 0.4
    assert summary["agreement"] == 0.75  # one top prediction of four differs
    assert [t["token"] for t in summary["top_tokens"]] == ["w111"]
    assert [d["doc_id"] for d in summary["top_documents"]] == [70]
