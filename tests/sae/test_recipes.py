"""Typed SAE recipes agree with the config schema: the same keys, the same defaults, a docstring per field;
and a recipe passes through its job unchanged."""

from __future__ import annotations

import ast
import dataclasses
import inspect

import pytest

from workflow import config
from workflow.sae import ARCHITECTURES, architecture, recipe_from_dict
from workflow.sae.recipe import Recipe

SCOPE_KEYS = {"datasets", "layers", "sites"}


def _schema():
    shared, own, required = config.architecture_keys()
    return config.schema()["$defs"]["sae"]["properties"], shared - SCOPE_KEYS, own, required


def _field_docs(cls) -> dict[str, str]:
    """The string literal under each field of a dataclass and its bases (sparsify's style)."""
    docs = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for node, after in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
            ):
                docs[node.target.id] = after.value.value
    return docs


def test_the_registry_and_the_schema_name_the_same_architectures():
    properties, *_ = _schema()
    assert properties["architecture"]["enum"] == list(ARCHITECTURES)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_each_recipe_has_the_schemas_keys_and_defaults_and_documents_every_field(name):
    properties, shared, own, required = _schema()
    cls = architecture(name).recipe_type
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == shared | own[name], f"{name}: recipe fields differ from the schema's keys"
    for key, field in fields.items():
        if "default" in properties[key]:
            default = field.default if field.default is not dataclasses.MISSING else None
            expected = properties[key]["default"]
            assert (list(default) if isinstance(default, tuple) else default) == expected, key
        elif key in required[name]:
            assert field.default is dataclasses.MISSING, f"{name}.{key} is required by the schema"
    missing = set(fields) - set(_field_docs(cls))
    assert not missing, f"{name}: fields without a docstring: {sorted(missing)}"


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_a_configured_recipe_reaches_its_job_unchanged(name, tiny_bert):
    cfg = config.load(
        {
            "models": {"m": {"source": str(tiny_bert)}},
            "datasets": {"d": {"source": "builtin", "task": "news_topic"}},
            "layers": [1, 2],
            "saes": {
                "s": {"architecture": name, "k": 4}
                if "k" in config.architecture_keys()[2][name]
                else {"architecture": name}
            },
        }
    )
    values = {k: v for k, v in cfg["saes"]["s"].items() if k not in SCOPE_KEYS}
    recipe = recipe_from_dict(values)
    assert isinstance(recipe, Recipe) and recipe.as_dict() == dict(sorted(values.items()))
    assert recipe.d_sae_for(32) == 8 * 32 and "d_sae" not in recipe.as_dict()  # the width key not given stays out
    with pytest.raises(ValueError, match="unknown keys"):
        recipe_from_dict({**values, "l2_coefficient": 1.0})


def test_the_crosscoder_recipe_has_the_schemas_keys_and_defaults():
    from workflow.sae.crosscoder import CrosscoderRecipe

    properties = config.schema()["$defs"]["crosscoder"]["properties"]
    fields = {f.name: f for f in dataclasses.fields(CrosscoderRecipe)}
    assert set(fields) == set(properties) - SCOPE_KEYS
    for key, field in fields.items():
        if "default" in properties[key]:
            default = field.default if field.default is not dataclasses.MISSING else None
            assert (list(default) if isinstance(default, tuple) else default) == properties[key]["default"], key
    assert CrosscoderRecipe(k=4, expansion_factor=2).d_sae_for(2 * 32) == 64  # per side's width
