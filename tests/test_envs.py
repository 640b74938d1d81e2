"""The conda environment and pyproject.toml pin the same versions."""

import tomllib

import yaml

from tests.conftest import ROOT


def test_conda_env_pins_equal_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs/workflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(project)
    assert all("==" in pin for pin in project), "every dependency is pinned exactly"
