"""Tests for the offline planted-concept datasets in workflow.datasets.builtin."""

from __future__ import annotations

import re
from collections import Counter
from itertools import combinations

import pytest

from workflow.datasets.baseline import bow_baseline
from workflow.datasets.builtin import CONCEPTS, TASKS, VOCAB, generate

ALL_TASKS = sorted(TASKS)
WORD_TO_CONCEPT = {w: c for c, words in VOCAB.items() for w in words}


@pytest.fixture(scope="module", params=ALL_TASKS)
def task_rows(request):
    return request.param, generate(request.param, 600, seed=3)


def _expected_label(task: str, row: dict) -> int:
    """Independent re-derivation of the label from the spans (and so the text)."""
    spans = row["spans"]
    if task == "news_topic":
        return TASKS[task].index(spans[0]["concept"].removeprefix("topic_"))
    polarities, negate = [], False
    for s in spans:
        if s["concept"] == "negation":
            negate = True
        elif s["concept"] in ("positive_word", "negative_word"):
            p = 1 if s["concept"] == "positive_word" else -1
            polarities.append(-p if negate else p)
            negate = False
    if task == "movie_sentiment":
        assert sum(polarities) != 0
        return int(sum(polarities) > 0)
    assert len(polarities) == 4
    return polarities.count(1)


def test_public_tables_are_consistent():
    assert TASKS["movie_sentiment"] == ["negative", "positive"]
    assert TASKS["app_rating"] == ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    assert TASKS["news_topic"] == ["world", "sports", "business", "science", "entertainment"]
    assert set(CONCEPTS) == set(TASKS)
    for concepts in CONCEPTS.values():
        assert set(concepts) <= set(VOCAB)


def test_vocabularies_are_small_whole_words_and_disjoint():
    for concept, words in VOCAB.items():
        assert 5 <= len(words) <= 20, concept
        assert len(set(words)) == len(words), concept
        assert all(re.fullmatch(r"[a-z]+", w) for w in words), concept
    for a, b in combinations(VOCAB, 2):
        assert not set(VOCAB[a]) & set(VOCAB[b]), (a, b)


def test_same_seed_is_identical_and_other_seed_differs():
    for task in ALL_TASKS:
        assert generate(task, 50, seed=7) == generate(task, 50, seed=7)
        assert generate(task, 50, seed=7, label_noise=0.1) == generate(task, 50, seed=7, label_noise=0.1)
        other = generate(task, 50, seed=8)
        assert [r["text"] for r in other] != [r["text"] for r in generate(task, 50, seed=7)]


def test_row_schema_and_label_range(task_rows):
    task, rows = task_rows
    assert len(rows) == 600
    for row in rows:
        assert set(row) == {"text", "label", "spans"}
        assert isinstance(row["text"], str) and isinstance(row["label"], int)
        assert 0 <= row["label"] < len(TASKS[task])


def test_spans_are_sorted_disjoint_and_in_vocabulary(task_rows):
    task, rows = task_rows
    for row in rows:
        text, spans = row["text"], row["spans"]
        assert spans, text
        for s in spans:
            assert s["concept"] in CONCEPTS[task]
            assert text[s["start"] : s["end"]] in VOCAB[s["concept"]]
        for a, b in zip(spans, spans[1:]):
            assert a["end"] < b["start"]


def test_every_concept_word_occurrence_is_marked(task_rows):
    task, rows = task_rows
    for row in rows:
        marked = {(s["start"], s["end"]): s["concept"] for s in row["spans"]}
        for m in re.finditer(r"[a-z]+", row["text"]):
            if m.group() in WORD_TO_CONCEPT:
                assert marked.get(m.span()) == WORD_TO_CONCEPT[m.group()], row["text"]
        assert len(marked) == sum(m.group() in WORD_TO_CONCEPT for m in re.finditer(r"[a-z]+", row["text"]))


def test_negation_directly_precedes_a_sentiment_word(task_rows):
    task, rows = task_rows
    for row in rows:
        spans = row["spans"]
        for s, nxt in zip(spans, spans[1:] + [None]):
            if s["concept"] == "negation":
                assert nxt is not None and nxt["concept"] in ("positive_word", "negative_word")
                assert nxt["start"] == s["end"] + 1


def test_label_is_deterministic_function_of_text(task_rows):
    task, rows = task_rows
    for row in rows:
        assert row["label"] == _expected_label(task, row), row["text"]


def test_negation_is_used_in_both_classes():
    rows = generate("movie_sentiment", 600, seed=0)
    with_negation = Counter(r["label"] for r in rows if any(s["concept"] == "negation" for s in r["spans"]))
    assert with_negation[0] > 50 and with_negation[1] > 50


def test_text_length_and_sentence_count(task_rows):
    _, rows = task_rows
    for row in rows:
        n_words = len(row["text"].split())
        assert 8 <= n_words <= 60, row["text"]
        assert 1 <= row["text"].count(".") <= 4, row["text"]
        assert row["text"] == row["text"].lower()


def test_class_balance(task_rows):
    task, rows = task_rows
    counts = Counter(r["label"] for r in rows)
    k = len(TASKS[task])
    assert set(counts) == set(range(k))
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("task", ALL_TASKS)
def test_label_noise_flips_requested_fraction_keeping_texts(task):
    clean = generate(task, 1000, seed=5)
    noisy = generate(task, 1000, seed=5, label_noise=0.2)
    assert [r["text"] for r in clean] == [r["text"] for r in noisy]
    assert [r["spans"] for r in clean] == [r["spans"] for r in noisy]
    changed = sum(c["label"] != n["label"] for c, n in zip(clean, noisy))
    assert changed == 200
    assert all(0 <= r["label"] < len(TASKS[task]) for r in noisy)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_bow_baseline_is_imperfect_but_above_chance(task):
    train, test = generate(task, 2000, seed=0), generate(task, 500, seed=1)
    result = bow_baseline(
        [r["text"] for r in train], [r["label"] for r in train], [r["text"] for r in test], [r["label"] for r in test]
    )
    assert set(result) == {"accuracy", "macro_f1"}
    chance = 1 / len(TASKS[task])
    assert chance + 0.15 < result["accuracy"] < 0.95
    assert 0 < result["macro_f1"] <= 1


def test_unknown_task_raises_naming_it():
    with pytest.raises(ValueError, match="imdb"):
        generate("imdb", 10, seed=0)


@pytest.mark.parametrize("n", [0, -3])
def test_bad_n_raises_naming_it(n):
    with pytest.raises(ValueError, match=f"n={n}"):
        generate("movie_sentiment", n, seed=0)


@pytest.mark.parametrize("noise", [1.0, -0.1, 1.5])
def test_bad_label_noise_raises_naming_it(noise):
    with pytest.raises(ValueError, match=re.escape(str(noise))):
        generate("news_topic", 10, seed=0, label_noise=noise)
