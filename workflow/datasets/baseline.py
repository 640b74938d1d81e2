"""What word counts alone achieve on a dataset: the baseline a fine-tuned transformer should beat."""

from __future__ import annotations


def bow_baseline(train_texts, train_labels, test_texts, test_labels) -> dict:
    """Unigram bag-of-words + logistic regression: {"accuracy", "macro_f1"} on test."""
    # Imported lazily so generating data does not require scikit-learn.
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    vectorizer = CountVectorizer(lowercase=True, ngram_range=(1, 1))
    model = LogisticRegression(max_iter=1000)
    try:
        counts = vectorizer.fit_transform(list(train_texts))
    except ValueError as exc:  # scikit-learn's "empty vocabulary"
        raise ValueError(
            f"bag-of-words baseline: the {len(train_texts)} training texts have no word of two or more letters "
            f"or digits ({exc})"
        ) from None
    model.fit(counts, list(train_labels))
    predicted = model.predict(vectorizer.transform(list(test_texts)))
    classes = sorted(set(train_labels))  # macro-F1 over the classes, not over ids nobody has
    return {
        "accuracy": float(accuracy_score(list(test_labels), predicted)),
        "macro_f1": float(f1_score(list(test_labels), predicted, labels=classes, average="macro")),
    }


def shortfall(accuracy: float, meta: dict) -> str | None:
    """What is wrong, if the fine-tuned classifier's test `accuracy` does not beat the majority class's
    share of the test split or falls below the bag-of-words baseline (meta.json of the dataset);
    None if it beats both. Every later analysis would compare a model that did not learn the task."""
    counts = (meta.get("class_counts") or {}).get("test")
    if not counts or not meta.get("bow_baseline"):
        return None
    majority, bow = max(counts.values()) / sum(counts.values()), meta["bow_baseline"]["accuracy"]
    advice = "Train longer (finetune.epochs), with another learning rate (finetune.lr) or on more documents"
    if accuracy <= majority:
        return (
            f"the fine-tuned model's test accuracy {accuracy:.3f} does not beat the majority class ({majority:.3f}): "
            f"it did not learn the task, and every analysis compares a model that did not. {advice}."
        )
    if accuracy < bow:
        return (
            f"the fine-tuned model's test accuracy {accuracy:.3f} is below the bag-of-words baseline ({bow:.3f}): "
            f"word counts alone solve more of the task than the fine-tune learned. {advice} before reading the "
            "analyses."
        )
    return None
