"""`workflow.datasets.tokenize`: a dataset split as a tokens table (planted concepts per token, chat
formatting, the truncation summary)."""

from __future__ import annotations

import polars as pl
import pytest

from workflow.datasets import SPAN_TYPE
from workflow.datasets.tokenize import _concepts_of, _outside, chat_format, tokenize_table, truncation


def test_a_token_carries_each_concept_whose_span_overlaps_it_once_sorted():
    spans = [{"start": 4, "end": 8, "concept": "b"}, {"start": 6, "end": 12, "concept": "a"}]
    spans.append({"start": 7, "end": 8, "concept": "b"})
    offsets = [(0, 0), (0, 3), (4, 6), (6, 8), (8, 12), (12, 13)]  # a special token, then words
    assert _concepts_of(offsets, spans) == [[], [], ["b"], ["a", "b"], ["a"], []]


def test_tokens_outside_the_documents_own_text_are_the_templates():
    # spans: the document's text at 5..10 and its response at 20..24; (0, 0) is a special token
    offsets = [(0, 0), (0, 5), (4, 6), (6, 10), (10, 20), (20, 22), (24, 30)]
    assert _outside(offsets, [(5, 10), (20, 24)]) == [True, True, False, False, True, False, True]


class Template:
    """A chat template that wraps each turn as ``[role]content`` and adds ``[assistant]`` as the prompt."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize
        out = "".join(f"[{m['role']}]{m['content']}" for m in messages)
        return out + ("[assistant]" if add_generation_prompt else "")


class Lowering:
    """A template that changes the document's text."""

    def apply_chat_template(self, messages, **_):
        return messages[0]["content"].lower()


def test_chat_format_finds_the_text_and_the_response_inside_the_formatted_document():
    data = pl.DataFrame({"text": ["hi there", "go"], "response": ["", "ok"]})
    formatted, content, shifts = chat_format(data, Template())
    assert formatted == ["[user]hi there[assistant]", "[user]go[assistant]ok"]
    assert content == [[(6, 14)], [(6, 8), (19, 21)]] and shifts == [6, 6]
    with pytest.raises(ValueError, match="changed the text"):
        chat_format(pl.DataFrame({"text": ["Hi"]}), Lowering())


def test_truncation_counts_documents_and_tokens_cut():
    assert truncation([0, 3, 0, 5], 40, 10, stride=None) == {
        "max_length": 10,
        "stride": None,
        "documents": 4,
        "documents_truncated": 2,
        "tokens_kept": 40,
        "tokens_cut": 8,
        "cut_share": 8 / 48,
    }
    assert truncation([], 0, 10, 4)["cut_share"] == 0.0  # an empty split divides by one, not zero


def test_rows_number_the_tokens_and_planted_concepts_land_on_their_words(tiny_bert):
    from workflow.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_bert))
    data = pl.DataFrame(
        {"id": [3, 8], "text": ["the red sky", "a blue day and a red one"], "label": [1, 0]},
    ).with_columns(spans=pl.Series([[{"start": 4, "end": 7, "concept": "colour"}], []], dtype=SPAN_TYPE))
    table, cut = tokenize_table(data, tokenizer, 6)
    assert cut == [0, 3]  # "a blue day and a red one" is 7 words, 4 kept between [CLS] and [SEP]
    assert table["row"].to_list() == list(range(len(table))) and set(table["window"]) == {0}
    first = table.filter(pl.col("doc_id") == 3)
    assert first["token"].to_list() == ["[CLS]", "the", "red", "sky", "[SEP]"]
    assert first["concepts"].to_list() == [[], [], ["colour"], [], []] and first["label"].to_list() == [1] * 5
    assert first["is_special"].to_list() == [True, False, False, False, True]
    assert table.filter(pl.col("doc_id") == 8)["pos"].to_list() == list(range(6))
