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
