"""report_index: the study index lists every report folder from its summary.json, with its numbers and links."""

from __future__ import annotations

import re

from workflow import layout
from workflow.stages import report_index
from workflow.store.files import write_json

PAGES = {
    "report": "index.html",
    "features": "feature.html",
    "sentences": "sentences.html",
    "similarity_plot": "img/similarity.png",
}


def _folder(root, model, dataset, n_saes, **numbers):
    folder = root / layout.REPORT.path(model=model, dataset=dataset)
    pages = PAGES if n_saes else {**PAGES, "features": None, "sentences": None}
    write_json(
        {
            "model": model,
            "dataset": dataset,
            "n_saes": n_saes,
            "accuracy_pretrained": 0.5,
            "accuracy_finetuned": 0.9,
            "last_layer_cka": 0.7,
            "last_layer_mean_cosine": 0.8,
            "retained_fraction": None,
            "best_probe": None,
            "variant": "classify",
            "lm_loss_pretrained": None,
            "lm_loss_finetuned": None,
            "mean_kl": None,
            "pages": pages,
            **numbers,
        },
        folder / "summary.json",
    )
    return str(folder)


def _rows(html):
    body = html.split('<table class="index">')[1].split("</tbody>")[0].split("<tbody>")[1]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_index_lists_each_report_with_its_numbers_and_links(tmp_path):
    pages = [
        _folder(tmp_path, "bert", "news", 0, accuracy_finetuned=0.8125),
        _folder(tmp_path, "gpt2", "reviews", 4, retained_fraction=0.25, best_probe=0.95, variant="checkpoint x",
                lm_loss_pretrained=3.25, lm_loss_finetuned=2.5, mean_kl=0.125),
    ]  # fmt: skip
    out = tmp_path / layout.REPORT_INDEX.file("page")
    summaries = report_index.run(pages, str(out), ["bert on wiki: unlabelled"])
    assert [s["model"] for s in summaries] == ["bert", "gpt2"]
    html = out.read_text()
    news, reviews = _rows(html)
    assert news[0] == "bert / news" and reviews[0] == "gpt2 / reviews"
    assert news[1] == "classify" and reviews[1] == "checkpoint x"
    # floats to 3 decimals, None as n/a
    assert news[3:12] == ["0.500", "0.812", "n/a", "n/a", "0.700", "0.800", "0", "n/a", "n/a"]
    assert reviews[5:7] == ["3.250 / 2.500", "0.125"] and reviews[10:12] == ["0.250", "0.950"]
    assert "Not studied: bert on wiki: unlabelled." in html
    assert news[12] == '<a href="bert/news/index.html">report</a>'  # no SAE: no feature pages to link
    assert reviews[12] == (
        '<a href="gpt2/reviews/index.html">report</a> · <a href="gpt2/reviews/feature.html">features'
        '</a> · <a href="gpt2/reviews/sentences.html">sentences</a>'
    )
    assert (
        '<a href="gpt2/reviews/index.html#similarity"><img class="thumb" alt="similarity by layer" '
        'src="gpt2/reviews/img/similarity.png"></a>'
    ) in reviews[2]
    assert "<title>study index</title>" in html and "http" not in html


def test_index_command_line(tmp_path):
    pages = [_folder(tmp_path, "m", 'd<"&>', 1)]
    out = tmp_path / "site/index.html"
    report_index.main(["--pages", *pages, "--out", str(out)])
    [row] = _rows(out.read_text())
    assert row[0] == "m / d&lt;&#34;&amp;&gt;"  # names are escaped, in text and in links
    assert row[12].startswith('<a href="../results/reports/m/d&lt;&#34;&amp;&gt;/index.html">report</a>')
