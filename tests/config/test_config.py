"""Bad input is caught before any job starts, with a message naming the key, file or value."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.conftest import ROOT, run_snakemake
from workflow import config as study
from workflow.plan import Plan

DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def tiny_config(model_dir, data_path) -> dict:
    return {
        "models": {"tiny": {"source": str(model_dir)}},
        "datasets": {"reviews": {"source": "file", "path": str(data_path)}},
        "layers": [1, 2],
    }


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "reviews.csv"
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull", "superb", "weak", "lovely", "bland"]
    pl.DataFrame({"text": words, "label": [1, 0] * 6}).write_csv(path)
    return path


def test_default_config_is_valid_and_gets_defaults():
    cfg = study.load(DEFAULT)
    assert cfg["models"]["minilm"]["finetune"]["lr"] == DEFAULT["finetune"]["lr"]
    assert cfg["models"]["minilm"]["layers"] == [2, 4, 6]
    assert cfg["similarity"]["max_tokens"] == DEFAULT["similarity"]["max_tokens"]
    assert cfg["datasets"]["rotten_tomatoes"]["test_fraction"] == 0.2


def test_every_schema_property_is_commented_in_the_default_config():
    text = (ROOT / "config.yaml").read_text()
    schema = study.schema()
    for block in (
        "tokenize",
        "extract",
        "similarity",
        "sae_eval",
        "features",
        "diff",
        "probe",
        "kmeans",
        "heads",
        "lm_compare",
        "crosscoder",
        "stagewise",
    ):
        for key in schema["properties"][block]["properties"]:
            assert f"  {key}:" in text, f"config.yaml does not show {block}.{key}"
    for key in schema["$defs"]["finetune"]["properties"]:
        assert f"  {key}:" in text, f"config.yaml does not show finetune.{key}"
    full = (ROOT / "config" / "full.yaml").read_text()
    for key in schema["$defs"]["sae"]["properties"]:
        assert f" {key}:" in text + full, f"neither config.yaml nor config/full.yaml shows an SAE recipe's {key}"


def test_sae_recipes_get_defaults_and_lose_keys_of_other_architectures():
    cfg = study.load(DEFAULT)
    topk = cfg["saes"]["topk"]
    assert topk["k"] == 8 and topk["aux_coefficient"] == 1 / 32 and "l1_coefficient" not in topk
    assert "bandwidth" not in topk and "target_l0" not in topk
    relu = cfg["saes"]["relu"]
    assert relu["l1_coefficient"] == 5.0 and "k" not in relu and "aux_k" not in relu
    assert "datasets" not in Plan(cfg).sae_recipe("relu") and relu["datasets"] == ["movie_sentiment"]


CROSSCODER = {"datasets": ["movie_sentiment"], "expansion_factor": 2, "k": 12}


def test_crosscoder_recipes_and_thresholds_are_checked():
    cfg = copy.deepcopy(DEFAULT)
    cfg["crosscoders"] = {"batchtopk": dict(CROSSCODER)}
    cfg["crosscoders"]["batchtopk"]["k"] = 2000  # 768 latents on MiniLM
    cfg["crosscoders"]["batchtopk"]["layers"] = [5]
    cfg["crosscoder"]["shared_band"] = 0.45  # overlaps pretrained-only
    cfg["diff"]["seed_baseline_layers"] = [5]
    with pytest.raises(study.ConfigError) as info:
        study.load(cfg)
    text = str(info.value)
    assert "crosscoders.batchtopk.k: 2000 is more than the 768 latents" in text
    assert "crosscoders.batchtopk.layers: [5] not extracted" in text
    assert "crosscoder: the classes overlap" in text and "diff.seed_baseline_layers: 5" in text
    cfg = copy.deepcopy(DEFAULT)
    cfg["crosscoders"] = {"batchtopk": {**CROSSCODER, "l1_coefficient": 1.0}}
    with pytest.raises(study.ConfigError, match="l1_coefficient"):
        study.load(cfg)
    loaded = study.load({**DEFAULT, "crosscoders": {"batchtopk": CROSSCODER}})
    assert Plan(loaded).crosscoder_recipe("batchtopk")["architecture"] == "crosscoder"
    assert "datasets" not in Plan(loaded).crosscoder_recipe("batchtopk")


def test_diff_thresholds_must_nest():
    cfg = copy.deepcopy(DEFAULT)
    cfg["diff"]["match_cosine"] = 0.95
    with pytest.raises(study.ConfigError, match=r"diff.match_cosine: 0.95 is above diff.retained_cosine 0.9"):
        study.load(cfg)


def _problems(cfg) -> str:
    with pytest.raises(study.ConfigError) as info:
        study.load(cfg)
    return str(info.value)


# Each case: (how to break the config, text the message must contain).
CASES = {
    "unknown_key": (
        lambda c, t: c.setdefault("finetune", {}).update(learning_rate=1e-3),
        "finetune: unknown key 'learning_rate'",
    ),
    "wrong_type": (lambda c, t: c.setdefault("finetune", {}).update(epochs="two"), "finetune.epochs: 'two' is invalid"),
    "layer_beyond_depth": (lambda c, t: c.update(layers=[1, 9]), "\n  - layers: layer(s) [9] beyond the 2 blocks"),
    "model_layer_beyond_depth": (
        lambda c, t: c["models"]["tiny"].update(layers=[3]),
        "models.tiny.layers: layer(s) [3]",
    ),
    "max_length_beyond_positions": (
        lambda c, t: c.update(tokenize={"max_length": 1000}),
        "tokenize.max_length: 1000 tokens exceed the 256 positions",
    ),
    "sae_trains_less_than_a_batch": (
        lambda c, t: c.update(saes={"s": {"architecture": "topk", "k": 4, "train_tokens": 100, "batch_size": 4096}}),
        "saes.s.train_tokens: 100 is less than one batch (saes.s.batch_size 4096)",
    ),
    "stride_of_half_a_window": (
        lambda c, t: c.update(tokenize={"max_length": 32, "stride": 16}),
        "tokenize.stride: 16 overlapping tokens leave windows of tokenize.max_length 32 advancing by half a window",
    ),
    "model_without_tokenizer": (
        lambda c, t: c["models"]["tiny"].update(source=str(_config_only(c, t))),
        "no tokenizer in that folder",
    ),
    "one_class": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(_write(t, "one.csv", ["1", "1", "1"]))),
        "only one class",
    ),
    "unknown_site": (lambda c, t: c.update(sites=["resid_mid"]), "sites.0: 'resid_mid' is invalid"),
    "missing_file": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(t / "nope.csv")),
        "nope.csv' does not exist",
    ),
    "missing_label_column": (
        lambda c, t: c["datasets"]["reviews"].update(label_column="stars"),
        "no column 'stars' (from label_column)",
    ),
    "non_integer_labels": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(_write(t, "strings.csv", ["pos", "neg"]))),
        "labels must be integers",
    ),
    "too_few_documents": (  # 3 documents: the train split gets 2, the test split 1
        lambda c, t: c["datasets"]["reviews"].update(path=str(_write(t, "three.csv", ["0", "1", "0"]))),
        "the train split (2 documents) needs at least 3 document(s) of each class, but has",
    ),
    "too_few_of_a_class": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(_write(t, "rare.csv", ["0"] * 12 + ["1", "1"]))),
        "needs at least 3 document(s) of each class, but has '1': ",
    ),
    "labels_not_from_zero": (  # 1 and 2 would be three classes, with an empty class 0
        lambda c, t: c["datasets"]["reviews"].update(path=str(_write(t, "gap.csv", ["1", "2"] * 6))),
        "labels must be contiguous from 0, but class(es) [0] have no document; the column has 2 distinct values "
        "(with their counts): 1 (6), 2 (6)",
    ),
    "string_labels_listed": (
        lambda c, t: c["datasets"]["reviews"].update(
            path=str(_write(t, "sources.csv", ["abcnews"] * 5 + ["cnn"] * 4 + ["bbc"] * 3))
        ),
        "3 distinct values (with their counts): 'abcnews' (5), 'bbc' (3), 'cnn' (4). Give `label_names: auto`",
    ),
    "latin1_file": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(_latin1(t))),
        "latin1.csv: not valid utf-8 at byte 21 (line 3: ",
    ),
    "unknown_encoding": (
        lambda c, t: c["datasets"]["reviews"].update(encoding="klingon"),
        "unknown encoding 'klingon' (from encoding)",
    ),
    "label_names_wrong_word": (
        lambda c, t: c["datasets"]["reviews"].update(label_names="automatic"),
        "datasets.reviews.label_names: 'automatic' is",
    ),
    "test_file_without_a_class": (
        lambda c, t: c["datasets"]["reviews"].update(test_path=str(_write(t, "test0.csv", ["0", "0"]))),
        "the test split (2 documents) needs at least 1 document(s) of each class, but has '1': 0",
    ),
    "labels_missing": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(_file(t, "gaps.csv", "text,label\n" + "a,1\nb,\n" * 8))),
        "column 'label': 8 rows have no label",
    ),
    "negative_labels": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(_write(t, "neg.csv", ["-1", "0", "1"] * 4))),
        "labels must be integers 0..K-1; the column has 3 distinct values (with their counts): -1 (4), 0 (4), 1 (4)",
    ),
    "unknown_file_type": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(_file(t, "data.xlsx", "x"))),
        "data.xlsx: unknown file type '.xlsx'",
    ),
    "blank_text_file": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(_file(t, "blank.txt", "\n  \n\n"))),
        "blank.txt: the dataset is empty",
    ),
    "missing_texts": (
        lambda c, t: c["datasets"]["reviews"].update(
            path=str(_file(t, "notext.csv", "text,label\n" + ",1\nb,0\n" * 6))
        ),
        "column 'text' has missing texts",
    ),
    "latin1_jsonl": (
        lambda c, t: c["datasets"]["reviews"].update(
            path=str(_file(t, "l1.jsonl", '{"text": "caf\u00e9", "label": 0}\n', encoding="latin-1"))
        ),
        "l1.jsonl: not valid utf-8 at byte 13 (line 1: ",
    ),
    "auto_names_test_value_unseen": (
        lambda c, t: c["datasets"]["reviews"].update(
            path=str(_write(t, "tr.csv", ["neg", "pos"] * 6)),
            test_path=str(_write(t, "te.csv", ["neg", "pos", "meh"])),
            label_names="auto",
        ),
        "label values ['meh'] are not in label_names ['neg', 'pos']",
    ),
    "label_names_repeated": (
        lambda c, t: c["datasets"]["reviews"].update(label_names=[0, 1, 1]),
        "label_names ['0', '1', '1'] name ['1'] more than once; each class once",
    ),
    "label_names_with_a_class_no_document_has": (  # a phantom class
        lambda c, t: c["datasets"]["reviews"].update(label_names=[0, 1, 2]),
        "needs at least 3 document(s) of each class, but has '2': 0",
    ),
    "calibration_batches_negative": (
        lambda c, t: c.update(saes={"s": {"architecture": "batchtopk", "k": 4, "calibration_batches": -1}}),
        "saes.s.calibration_batches: -1 is invalid",
    ),
    "calibration_batches_on_topk": (
        lambda c, t: c.update(saes={"s": {"architecture": "topk", "k": 4, "calibration_batches": 8}}),
        "saes.s.calibration_batches: not used by architecture 'topk'",
    ),
    "empty_dataset": (
        lambda c, t: c["datasets"]["reviews"].update(path=str(_write(t, "empty.csv", []))),
        "empty.csv: the dataset is empty",
    ),
    "model_path_missing": (
        lambda c, t: c["models"]["tiny"].update(source=str(t / "no-model")),
        "models.tiny.source: model source",
    ),
    "hub_model_offline": (
        lambda c, t: c["models"]["tiny"].update(source="bert-base-uncased"),
        "'bert-base-uncased' is a Hugging Face id that is not in the local cache",
    ),
    "hub_dataset_offline": (
        lambda c, t: c["datasets"].update(imdb={"source": "huggingface", "id": "stanfordnlp/imdb"}),
        "datasets.imdb.id: Hugging Face dataset 'stanfordnlp/imdb' cannot be loaded",
    ),
    "key_of_other_source": (
        lambda c, t: c["datasets"]["reviews"].update(task="news_topic"),
        "datasets.reviews.task: not used by source 'file'",
    ),
    "bad_model_name": (lambda c, t: c["models"].update({"my model": {"source": "x"}}), "name 'my model' may hold only"),
    "sublayer_at_layer_0": (
        lambda c, t: c.update(layers=[0, 1], sites=["mlp_out"]),
        "sites ['mlp_out'] have no layer 0",
    ),
    "sae_k_beyond_width": (
        lambda c, t: c.update(saes={"s": {"architecture": "topk", "d_sae": 16, "k": 32}}),
        "saes.s.k: 32 is more than the 16 latents it has on model 'tiny'",
    ),
    "sae_unknown_architecture": (
        lambda c, t: c.update(saes={"s": {"architecture": "gated"}}),
        "saes.s.architecture: 'gated' is invalid",
    ),
    "sae_negative_lr": (
        lambda c, t: c.update(saes={"s": {"architecture": "relu", "lr": -1}}),
        "saes.s.lr: -1 is invalid",
    ),
    "sae_key_of_other_architecture": (
        lambda c, t: c.update(saes={"s": {"architecture": "relu", "k": 8}}),
        "saes.s.k: not used by architecture 'relu'",
    ),
    "sae_topk_without_k": (
        lambda c, t: c.update(saes={"s": {"architecture": "batchtopk"}}),
        "saes.s: architecture 'batchtopk' needs key 'k'",
    ),
    "sae_scope_unknown_dataset": (
        lambda c, t: c.update(saes={"s": {"architecture": "relu", "datasets": ["nope"]}}),
        "saes.s.datasets: ['nope'] not in the study's datasets",
    ),
    "heads_scope_unknown_dataset": (
        lambda c, t: c.update(heads={"datasets": ["nope"]}),
        "heads.datasets: ['nope'] not in the study's datasets",
    ),
    "heads_unknown_mode": (
        lambda c, t: c.update(heads={"modes": ["resample"]}),
        "heads.modes.0: 'resample' is invalid",
    ),
    "negative_lr_override": (lambda c, t: c["models"]["tiny"].update(finetune={"lr": -1}), "models.tiny.finetune.lr"),
    # boards with known abstractions (workflow/datasets/abstractions.py) and models trained from scratch
    "boards_root_too_big": (
        lambda c, t: _boards(c, board_dim=4, abs_dim=5),
        "datasets.boards.board.abs_dim: a 5x5 root does not fit a board_dim 4 board",
    ),
    "boards_too_many_object_cells": (
        lambda c, t: _boards(c, abs_c=10),
        "datasets.boards.board.abs_c: 10 object tokens exceed the 9 cells",
    ),
    "boards_too_many_roots_in_a_composite": (
        lambda c, t: _boards(c, comp_c=5),
        "datasets.boards.board.comp_c: 5 roots exceed the 4 places",
    ),
    "boards_composite_does_not_fit": (
        lambda c, t: _boards(c, comp_margin=3),
        "datasets.boards.board.comp_dim: a composite spans 9 cells",
    ),
    "boards_too_many_held_out": (
        lambda c, t: _boards(c, card_test=40),
        "datasets.boards.board.card_test: 40 held-out placements per abstraction leave none to train on",
    ),
    "boards_change_of_a_missing_root": (
        lambda c, t: _boards(c, change={"removed": [12]}),
        "datasets.boards.change.removed: roots [12] do not exist",
    ),
    "scratch_corpus_is_not_boards": (
        lambda c, t: c["models"].update(s={"source": "scratch", "scratch": {"family": "bert", "corpus": "reviews"}}),
        "models.s.scratch.corpus: 'reviews' is not a dataset of source abstractions",
    ),
    "scratch_2d_positions_of_a_rotary_family": (
        lambda c, t: (
            _boards(c)
            or c["models"].update(
                s={"source": "scratch", "scratch": {"family": "llama", "corpus": "boards", "positions": "2d"}}
            )
        ),
        "models.s.scratch.positions: 2d factorises a learned absolute position table; llama has none",
    ),
}


def _boards(c, change=None, **board):
    c["datasets"]["boards"] = {"source": "abstractions", "n_train": 50, "n_test": 20, "board": board}
    if change:
        c["datasets"]["boards"]["change"] = change


def _config_only(cfg, folder):
    """A model folder with config.json but no tokenizer files."""
    target = folder / "config-only"
    target.mkdir()
    (target / "config.json").write_text((Path(cfg["models"]["tiny"]["source"]) / "config.json").read_text())
    return target


def _latin1(folder):
    """A CSV in Latin-1: é is one byte (0xe9), not valid UTF-8."""
    rows = "text,label\ngood,1\ncaf\u00e9 bad,0\n" + "".join(f"w{i},{i % 2}\n" for i in range(12))
    return _file(folder, "latin1.csv", rows, encoding="latin-1")


def _file(folder, name, text, encoding="utf-8"):
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def _write(folder, name, labels):
    path = folder / name
    pl.DataFrame(
        {"text": [f"t{i}" for i in range(len(labels))], "label": labels}, schema={"text": pl.Utf8, "label": pl.Utf8}
    ).write_csv(path)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_stops_snakemake_before_any_job(case, tiny_bert, csv_file, tmp_path):
    cfg = tiny_config(tiny_bert, csv_file)
    study.load(copy.deepcopy(cfg))  # the unbroken config is fine
    CASES[case][0](cfg, tmp_path)
    assert CASES[case][1] in _problems(cfg)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    result = run_snakemake(work, "--cores", "1", "--configfile", str(tmp_path / "study.yaml"))
    assert result.returncode != 0
    assert CASES[case][1] in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert not (work / "results").exists() and not (work / "logs").exists()  # no job ran


def test_string_labels_map_through_label_names(tiny_bert, tmp_path):
    path = _write(tmp_path, "named.csv", ["pos", "neg"] * 6)
    cfg = tiny_config(tiny_bert, path)
    cfg["datasets"]["reviews"]["label_names"] = ["neg", "pos"]
    assert study.load(cfg)["datasets"]["reviews"]["label_names"] == ["neg", "pos"]
    cfg["datasets"]["reviews"]["label_names"] = ["negative", "positive"]
    assert "are not in label_names" in _problems(cfg)


def test_the_decoder_study_dry_runs_against_a_local_stand_in(tmp_path):
    """config/smollm2.yaml names a Hub id (online users); with its source swapped for a tiny local Llama
    of the same depth it validates and plans every stage."""
    from tests.tiny_models import make_tiny

    cfg = yaml.safe_load((ROOT / "config" / "smollm2.yaml").read_text())
    assert cfg["models"]["smollm2"]["source"] == "HuggingFaceTB/SmolLM2-135M"
    with pytest.raises(study.ConfigError, match="SmolLM2-135M.*not in the local cache"):
        study.load(cfg)  # offline: the id cannot be fetched, and the error says so
    stand_in = make_tiny("llama", tmp_path / "smollm2-stand-in", layers=30, tie_word_embeddings=True)
    cfg["models"]["smollm2"]["source"] = str(stand_in)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", "study.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    assert int(counts["train_sae"]) == 2 * 2 * (
        2 * 3 + 1
    )  # variants x datasets x (topk 2 layers x 3 sites + batchtopk)
    assert int(counts["heads"]) == 2 and int(counts["report"]) == 2


# ------------------------------------------------------------ fine-tuned variant kinds


def _config_with(models: dict, datasets: dict | None = None) -> dict:
    return {
        "models": models,
        "datasets": datasets or {"news": {"source": "builtin", "task": "news_topic"}},
        "layers": [1],
    }


def _problems(cfg) -> str:
    with pytest.raises(study.ConfigError) as err:
        study.load(cfg)
    return str(err.value)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from tests.tiny_models import make_tiny

    return make_tiny("gpt2", tmp_path_factory.mktemp("lm") / "gpt2")


def test_a_checkpoint_must_fit_its_base(tiny_lm, tmp_path):
    import json
    import shutil

    from tests.tiny_models import make_tiny

    def pair(checkpoint):
        return _config_with(
            {"m": {"source": str(tiny_lm), "finetuned": {"kind": "checkpoint", "source": str(checkpoint)}}}
        )

    same = tmp_path / "same"
    shutil.copytree(tiny_lm, same)
    cfg = study.load(pair(same))
    assert cfg["models"]["m"]["finetuned"]["lm"] == "causal"
    assert Plan(cfg).variant_source("m", "finetuned", "news") == str(same)
    # another vocabulary: two tokens swap ids
    other = tmp_path / "other-vocab"
    shutil.copytree(tiny_lm, other)
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = list(vocab)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(tok))
    message = _problems(pair(other))
    assert "models.m.finetuned.source" in message and "tokenizer vocabulary differs" in message
    assert "2 with other ids" in message and repr(a) in message
    # another width
    narrow = make_tiny("gpt2", tmp_path / "narrow", n_embd=32)
    message = _problems(pair(narrow))
    assert "d_model 32 differs from the base's 64" in message
    assert "tokenizer" not in message  # the same tokenizer: only the width is named


def test_lm_fine_tuning_needs_the_lm_head_and_known_lora_targets(tiny_bert, tiny_lm):
    message = _problems(_config_with({"b": {"source": str(tiny_bert), "finetuned": {"kind": "masked_lm"}}}))
    assert "models.b.finetuned.kind: masked_lm trains a masked LM head" in message and "no LM head" in message
    assert "BertModel" in message
    message = _problems(_config_with({"g": {"source": str(tiny_lm), "finetuned": {"kind": "masked_lm"}}}))
    assert "has a causal LM head" in message
    lora = {"kind": "causal_lm", "method": "lora", "lora": {"target_modules": ["c_attn", "q_proj"]}}
    message = _problems(_config_with({"g": {"source": str(tiny_lm), "finetuned": lora}}))
    assert "models.g.finetuned.lora.target_modules: ['q_proj'] are not linear layers of a gpt2 block" in message
    ok = study.load(_config_with({"g": {"source": str(tiny_lm), "finetuned": {"kind": "causal_lm", "method": "lora"}}}))
    assert ok["models"]["g"]["finetuned"]["lora"]["target_modules"] == ["c_attn", "attn.c_proj"]  # the family's
    message = _problems(_config_with({"g": {"source": str(tiny_lm), "finetuned": {"method": "lora"}}}))
    assert "models.g.finetuned.method: only for kind causal_lm or masked_lm" in message
    message = _problems(_config_with({"g": {"source": str(tiny_lm), "finetuned": {"kind": "checkpoint"}}}))
    assert "kind checkpoint needs key 'source'" in message


def test_a_chat_template_must_exist(tiny_lm, tmp_path):
    import json
    import shutil

    message = _problems(_config_with({"g": {"source": str(tiny_lm), "chat_template": True}}))
    assert "models.g.chat_template" in message and "has no chat template" in message
    chat = tmp_path / "chat"
    shutil.copytree(tiny_lm, chat)
    cfg_file = chat / "tokenizer_config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "chat_template": "{{ messages }}"}))
    # the base has none; the instruct checkpoint's template is used
    pair = {"source": str(tiny_lm), "chat_template": True, "finetuned": {"kind": "checkpoint", "source": str(chat)}}
    assert Plan(study.load(_config_with({"g": pair}))).chat_source("g") == str(chat)


def test_unlabelled_text_is_found_and_a_classifier_skips_it(tiny_bert, tiny_lm, tmp_path):
    (tmp_path / "notes.txt").write_text("first line of text\n\nsecond line\nthird one\n")
    pl.DataFrame({"text": ["a", "b", "c"], "source": ["x", "y", "z"]}).write_csv(tmp_path / "plain.csv")
    datasets = {
        "notes": {"source": "file", "path": str(tmp_path / "notes.txt")},
        "plain": {"source": "file", "path": str(tmp_path / "plain.csv")},
        "news": {"source": "builtin", "task": "news_topic"},
    }
    models = {"clf": {"source": str(tiny_bert)}, "lm": {"source": str(tiny_lm), "finetuned": {"kind": "causal_lm"}}}
    cfg = study.load(_config_with(models, datasets))
    assert [cfg["datasets"][d]["labelled"] for d in datasets] == [False, False, True]
    plan = Plan(cfg)
    assert plan.pairs() == [("clf", "news"), ("lm", "notes"), ("lm", "plain"), ("lm", "news")]
    assert "clf on notes: clf is fine-tuned by classification" in plan.unstudied()[0]
    assert plan.classifier("lm", "finetuned", "notes") is None and plan.probe_scope("lm", "notes") == []
    assert plan.classifier("lm", "finetuned", "news") == "results/frozen_classifiers/lm/finetuned/news"
    assert {s["analysis"] for s in plan.skipped("lm", "notes")} >= {"probes", "class AUROC", "task loss"}
    # a label column the user names must be there
    named = {"plain": {"source": "file", "path": str(tmp_path / "plain.csv"), "label_column": "label"}}
    assert "no column 'label' (from label_column)" in _problems(_config_with(models, named))


def test_the_instruct_pair_and_lora_studies_dry_run_against_local_stand_ins(tmp_path):
    """config/instruct_pair.yaml and config/lora.yaml name Hub ids (online users); with tiny local
    models of the same depth (and a local file for the Hub dataset) they validate and plan every stage."""
    import json
    import shutil

    from tests.tiny_models import make_tiny

    def dry_run(cfg, name):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        result = run_snakemake(tmp_path, "-n", "--quiet", "rules", "--configfile", f"{name}.yaml")
        assert result.returncode == 0, result.stderr[-3000:]
        return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M)}

    pair = yaml.safe_load((ROOT / "config" / "instruct_pair.yaml").read_text())
    assert pair["models"]["qwen"]["finetuned"]["source"] == "Qwen/Qwen2.5-0.5B-Instruct"
    base = make_tiny("qwen2", tmp_path / "base", layers=24)
    instruct = tmp_path / "instruct"
    shutil.copytree(base, instruct)
    tok = instruct / "tokenizer_config.json"
    template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    tok.write_text(json.dumps({**json.loads(tok.read_text()), "chat_template": template}))
    pair["models"]["qwen"]["source"] = str(base)
    pair["models"]["qwen"]["finetuned"]["source"] = str(instruct)
    pl.DataFrame({"instruction": ["say hi", "count"] * 20, "output": ["hi", "1 2 3"] * 20}).write_ndjson(
        tmp_path / "alpaca.jsonl"
    )
    pair["datasets"]["alpaca"] = {"source": "file", "path": "alpaca.jsonl", "text_column": "instruction",
                                  "response_column": "output", "label_column": None}  # fmt: skip
    counts = dry_run(pair, "pair")
    assert "finetune" not in counts and counts["lm_compare"] == 2 and counts["report"] == 2
    assert counts["frozen_classifier"] == 2  # news_topic only: both variants get a fitted linear head
    assert counts["train_sae"] == 2 * 2 * 2 and "probe" in counts  # variants x datasets x layers; probes on news

    lora = yaml.safe_load((ROOT / "config" / "lora.yaml").read_text())
    assert lora["models"]["smollm2"]["finetuned"]["method"] == "lora"
    lora["models"]["smollm2"]["source"] = str(make_tiny("llama", tmp_path / "smol", layers=30))
    counts = dry_run(lora, "lora")
    assert counts["finetune"] == 2 and counts["lm_compare"] == 2 and counts["frozen_classifier"] == 2 * 2
