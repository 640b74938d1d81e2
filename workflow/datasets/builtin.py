"""Offline, deterministic generators of labelled text with planted concepts.

Three tasks mirror a reference study: ``movie_sentiment`` (IMDb-like, 2 classes),
``app_rating`` (Spotify-review-like, 5 ordinal classes) and ``news_topic``
(AG-News-like plus entertainment, 5 classes). Every planted concept word is
recorded as a character span so later stages can probe for it.

Design
------
* Texts are built from sentence templates with slots. Slots are the only place
  concept words are emitted; literal template text never contains a word from
  ``VOCAB``, so every occurrence of a concept word is covered by a span.
* Sentiment opinions are "<sentiment word>" or "<negation> <sentiment word>".
  A negation FLIPS the polarity of the word right after it: "not great" counts
  as negative. Spans record the surface concept ("great" -> ``positive_word``;
  "not" -> ``negation``); labels use the effective (post-negation) polarity.
* Labels are a deterministic function of the text (before label noise):
  - movie_sentiment: majority of effective polarities (no ties by construction);
  - app_rating: number of effectively positive opinions among exactly four
    (0 -> "1 star" ... 4 -> "5 stars");
  - news_topic: the topic of the headline (first sentence); body sentences
    mention the true topic or one distractor topic, possibly more often.
* Why bag-of-words cannot reach 100%: a unigram model sees "great" and "not"
  but not that one modifies the other, so a negated opinion looks like its
  opposite (a linear model cannot express the XOR). In news, the headline's
  position decides the topic while BoW only sees counts, and distractor topics
  can be as frequent as the true one. A small transformer can use word order,
  so the tasks stay learnable.
* Randomness comes only from ``random.Random`` instances seeded from ``seed``.
  Label noise uses its own stream so texts are identical for any noise level.
"""

from __future__ import annotations

import random
import re

TASKS: dict[str, list[str]] = {
    "movie_sentiment": ["negative", "positive"],
    "app_rating": ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"],
    "news_topic": ["world", "sports", "business", "science", "entertainment"],
}

_TOPICS = TASKS["news_topic"]

# Concept -> whole-word vocabulary. Vocabularies are pairwise disjoint and no
# template/filler literal uses any of these words (checked by the tests).
VOCAB: dict[str, list[str]] = {
    "positive_word": [
        "good",
        "great",
        "excellent",
        "wonderful",
        "brilliant",
        "superb",
        "fantastic",
        "lovely",
        "enjoyable",
        "solid",
        "impressive",
        "pleasant",
    ],
    "negative_word": [
        "bad",
        "awful",
        "terrible",
        "horrible",
        "poor",
        "weak",
        "dull",
        "clumsy",
        "annoying",
        "disappointing",
        "frustrating",
        "mediocre",
    ],
    "negation": ["not", "never", "hardly", "barely", "scarcely"],
    "domain_movie": [
        "film",
        "movie",
        "actor",
        "plot",
        "soundtrack",
        "script",
        "director",
        "cast",
        "ending",
        "scene",
        "dialogue",
        "pacing",
    ],
    "domain_app": [
        "app",
        "playlist",
        "update",
        "shuffle",
        "interface",
        "podcast",
        "subscription",
        "download",
        "search",
        "lyrics",
        "radio",
        "widget",
    ],
    "topic_world": [
        "election",
        "parliament",
        "embassy",
        "treaty",
        "minister",
        "diplomats",
        "ceasefire",
        "refugees",
        "sanctions",
        "summit",
    ],
    "topic_sports": [
        "tournament",
        "striker",
        "goalkeeper",
        "league",
        "playoffs",
        "coach",
        "stadium",
        "championship",
        "referee",
        "marathon",
    ],
    "topic_business": [
        "merger",
        "shareholders",
        "earnings",
        "investors",
        "startup",
        "revenue",
        "stocks",
        "profits",
        "acquisition",
        "inflation",
    ],
    "topic_science": [
        "telescope",
        "researchers",
        "genome",
        "vaccine",
        "laboratory",
        "physicists",
        "satellite",
        "fossil",
        "molecules",
        "experiment",
    ],
    "topic_entertainment": [
        "premiere",
        "celebrity",
        "concert",
        "sitcom",
        "singer",
        "festival",
        "actress",
        "rapper",
        "paparazzi",
        "blockbuster",
    ],
}

CONCEPTS: dict[str, list[str]] = {
    "movie_sentiment": ["positive_word", "negative_word", "negation", "domain_movie"],
    "app_rating": ["positive_word", "negative_word", "negation", "domain_app"],
    "news_topic": [f"topic_{t}" for t in _TOPICS],
}

# Probability that an opinion is expressed through a negated opposite word.
# Tuned so BoW (n=2000/500) lands near 80% for movies and 55% for apps;
# higher values push BoW towards chance, lower ones towards 100%.
_P_NEGATE = {"movie_sentiment": 0.2, "app_rating": 0.15}
# Probability that a news body sentence mentions the true topic (else the
# distractor); 0.45 gives BoW about 68%.
_P_BODY_TRUE = 0.45

# Templates: {D} domain noun, {S} sentiment phrase, {T}/{X} news topic markers.
_MOVIE_OPINIONS = [
    "the {D} was {S}",
    "i thought the {D} was {S}",
    "honestly the {D} felt {S}",
    "overall the {D} is {S}",
    "the {D} seemed {S} to me",
    "as for the {D}, it was {S}",
    "to be fair the {D} was {S}",
    "in my opinion the {D} is {S}",
]
_MOVIE_FILLERS = [
    "i watched it with my family last weekend",
    "we saw it on a rainy sunday afternoon",
    "it runs a little over two hours",
    "the theater was packed on opening night",
    "my friends had recommended it for months",
    "i went in knowing almost nothing about it",
    "it is based on a novel i read years ago",
    "we rented it after a long week at work",
]
_APP_OPINIONS = [
    "the {D} is {S}",
    "i find the {D} {S}",
    "the {D} has been {S} lately",
    "honestly the {D} is {S}",
    "the new {D} feels {S}",
    "for me the {D} is {S}",
]
_APP_FILLERS = [
    "i use it every day on my phone",
    "been a premium user for about two years",
    "my whole family shares one account",
    "i mostly listen on the way to work",
    "tried it on my tablet as well",
    "i switched over from another service last year",
]
_APP_CONNECTORS = [", and ", ", but ", ", while "]
_NEWS_HEADLINES = [
    "new details emerge about the {T}",
    "all eyes are on the {T} this week",
    "questions grow over the {T}",
    "the latest on the {T} and what comes next",
    "a closer look at the {T}",
    "reporters follow the {T} as the story develops",
]
_NEWS_BODIES = [
    "commentators also pointed to the {X}",
    "a separate report covered the {X}",
    "readers asked about the {X} as well",
    "some coverage focused on the {X} instead",
    "the {X} was mentioned in passing",
    "an earlier piece looked at the {X}",
]
_NEWS_FILLERS = [
    "officials declined to comment on friday",
    "more details are expected later today",
    "the full story continues below",
    "this article was first published this morning",
]


class _Builder:
    """Accumulates text pieces while recording character spans of concept words."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[dict] = []
        self.length = 0

    def lit(self, s: str) -> None:
        self.parts.append(s)
        self.length += len(s)

    def word(self, w: str, concept: str) -> None:
        self.spans.append({"start": self.length, "end": self.length + len(w), "concept": concept})
        self.lit(w)

    def clause(self, template: str, fills: dict[str, list[tuple[str, str]]]) -> None:
        # re.split with a capture group alternates literal text and slot names.
        for i, piece in enumerate(re.split(r"\{(\w)\}", template)):
            if i % 2 == 0:
                self.lit(piece)
                continue
            for j, (w, concept) in enumerate(fills[piece]):
                if j:
                    self.lit(" ")
                self.word(w, concept)

    def sentences(self, sentences: list[list[tuple[str, dict]]], rng: random.Random) -> None:
        # A sentence is a list of (template, fills) clauses; multi-clause
        # sentences are glued with connectors that carry no sentiment.
        for k, clauses in enumerate(sentences):
            if k:
                self.lit(" ")
            for c, (template, fills) in enumerate(clauses):
                if c:
                    self.lit(rng.choice(_APP_CONNECTORS))
                self.clause(template, fills)
            self.lit(".")

    def text(self) -> str:
        return "".join(self.parts)


def _sentiment(rng: random.Random, polarity: int, p_negate: float) -> list[tuple[str, str]]:
    """Tokens expressing effective ``polarity`` (+1/-1), possibly as a negated opposite."""
    if rng.random() < p_negate:
        word_concept = "negative_word" if polarity > 0 else "positive_word"
        return [(rng.choice(VOCAB["negation"]), "negation"), (rng.choice(VOCAB[word_concept]), word_concept)]
    word_concept = "positive_word" if polarity > 0 else "negative_word"
    return [(rng.choice(VOCAB[word_concept]), word_concept)]


def _opinion(rng: random.Random, templates: list[str], domain: str, polarity: int, p_negate: float) -> tuple[str, dict]:
    fills = {"D": [(rng.choice(VOCAB[domain]), domain)], "S": _sentiment(rng, polarity, p_negate)}
    return rng.choice(templates), fills


def _movie(rng: random.Random, label: int) -> _Builder:
    # 1-3 opinions whose effective majority equals the label (odd counts avoid
    # ties; with two opinions both agree), plus fillers to reach 2-4 sentences.
    k = rng.randint(1, 3)
    sign = 1 if label == 1 else -1
    n_agree = rng.randint(k // 2 + 1, k)
    polarities = [sign] * n_agree + [-sign] * (k - n_agree)
    sentences = [[_opinion(rng, _MOVIE_OPINIONS, "domain_movie", p, _P_NEGATE["movie_sentiment"])] for p in polarities]
    sentences += [[(f, {})] for f in rng.sample(_MOVIE_FILLERS, rng.randint(1, 4 - k))]
    rng.shuffle(sentences)
    b = _Builder()
    b.sentences(sentences, rng)
    return b


def _app(rng: random.Random, label: int) -> _Builder:
    # Exactly four opinions; the rating is 1 + the number of effectively
    # positive ones, so adjacent ratings differ by a single (maybe negated) word.
    polarities = [1] * label + [-1] * (4 - label)
    rng.shuffle(polarities)
    clauses = [_opinion(rng, _APP_OPINIONS, "domain_app", p, _P_NEGATE["app_rating"]) for p in polarities]
    sentences: list[list] = [[clauses[0]]]
    for clause in clauses[1:]:
        if rng.random() < 0.5:
            sentences[-1].append(clause)
        else:
            sentences.append([clause])
    if len(sentences) < 4 and rng.random() < 0.5:
        sentences.insert(rng.randint(0, len(sentences)), [(rng.choice(_APP_FILLERS), {})])
    b = _Builder()
    b.sentences(sentences, rng)
    return b


def _news(rng: random.Random, label: int) -> _Builder:
    # The headline (always first) carries the true topic; body sentences
    # mention the true topic or a single distractor topic, which may dominate
    # the counts, so only the headline position is decisive.
    topic = f"topic_{_TOPICS[label]}"
    distractor = f"topic_{rng.choice([t for t in _TOPICS if t != _TOPICS[label]])}"
    marker = lambda c: {"X": [(rng.choice(VOCAB[c]), c)]}  # noqa: E731
    headline = [(rng.choice(_NEWS_HEADLINES), {"T": marker(topic)["X"]})]
    body = [
        [(rng.choice(_NEWS_BODIES), marker(topic if rng.random() < _P_BODY_TRUE else distractor))]
        for _ in range(rng.randint(1, 3))
    ]
    if len(body) < 3 and rng.random() < 0.5:
        body.insert(rng.randint(0, len(body)), [(rng.choice(_NEWS_FILLERS), {})])
    b = _Builder()
    b.sentences([headline] + body, rng)
    return b


_GENERATORS = {"movie_sentiment": _movie, "app_rating": _app, "news_topic": _news}


def _validate(task: str, n: int, label_noise: float) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got n={n!r}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got label_noise={label_noise!r}")


def generate(task: str, n: int, seed: int, label_noise: float = 0.0) -> list[dict]:
    """n rows, each {"text", "label", "spans": [{"start", "end", "concept"}]}.

    Deterministic in (task, n, seed, label_noise). Labels are balanced (cycled
    then shuffled). ``label_noise`` replaces the label of exactly
    round(label_noise * n) rows by a uniformly drawn different label, using a
    separate random stream so texts do not depend on the noise level.
    """
    _validate(task, n, label_noise)
    n_classes = len(TASKS[task])
    rng = random.Random(f"{task}:{seed}")
    labels = [i % n_classes for i in range(n)]
    rng.shuffle(labels)
    rows = []
    for label in labels:
        b = _GENERATORS[task](rng, label)
        rows.append({"text": b.text(), "label": label, "spans": b.spans})
    noise_rng = random.Random(f"{task}:{seed}:noise")
    for i in noise_rng.sample(range(n), round(label_noise * n)):
        rows[i]["label"] = (rows[i]["label"] + noise_rng.randint(1, n_classes - 1)) % n_classes
    return rows
