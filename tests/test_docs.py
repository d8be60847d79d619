"""The README documents every command, option and configuration key that exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from slipway.arguments import build_parser
from slipway.cli import COMMANDS, main
from slipway.config import ModelConfig

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_handler():
    assert set(COMMANDS) == set(_subcommands())


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_is_in_the_cli_reference(command):
    assert re.search(rf"^\| `slipway {command}\b", README, re.MULTILINE), command


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_option_is_documented(command):
    parser = _subcommands()[command]
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert flag in README, f"{command} {flag}"


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert "usage: slipway" in capsys.readouterr().out


def _keys(document: dict, prefix: str = "") -> set[str]:
    found = set()
    for key, value in document.items():
        if prefix == "columns." or prefix.startswith("training.params"):
            continue
        found.add(prefix + key)
        if isinstance(value, dict):
            found |= _keys(value, f"{prefix}{key}.")
    return found


def test_every_key_of_the_example_config_is_documented():
    example = yaml.safe_load(
        (Path(__file__).resolve().parent.parent / "model/slipway.yaml").read_text()
    )
    top = set(ModelConfig.model_fields) - {"root"}
    assert set(example) <= top
    for key in _keys(example):
        leaf = key.rsplit(".", 1)[-1]
        spellings = (f"`{key}`", f"`{key}.", f"`{leaf}`", f".{leaf}`", f".{leaf}/", f"/{leaf}`")
        assert any(spelling in README for spelling in spellings), key
