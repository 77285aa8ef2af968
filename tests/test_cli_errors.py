"""Library errors name Python parameters (`resume=True`); the CLI says them as the command's flags."""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from pathlib import Path

import pytest

from clipforge.cli.main import _options, as_flags, build_parser, main

SRC = Path(__file__).resolve().parents[1] / "src" / "clipforge"


@pytest.fixture(scope="module")
def train_parser():
    return build_parser().parse_args(["train"]).command_parser


@pytest.mark.parametrize(
    ("message", "said"),
    [
        ("pass `resume=True`, or choose another `name=`", "pass --resume, or choose another --name"),
        ('lower `lr=` or use `precision="fp32"`', "lower --lr or use --precision fp32"),
        ("`report_to=wandb` needs wandb", "--report-to wandb needs wandb"),
        ("`init=` has none; `grad_checkpointing=True`", "--init has none; --grad-checkpointing"),
        ("`grad_checkpointing=False` then", "--no-grad-checkpointing then"),
        ("`not_a_flag=3` and a plain name=3 stay", "`not_a_flag=3` and a plain name=3 stay"),
    ],
)
def test_parameters_become_flags(train_parser, message: str, said: str) -> None:
    assert as_flags(message, train_parser) == said


def test_sub_commands_flags_are_found() -> None:
    evaluate = build_parser().parse_args(["eval", "zeroshot", "data", "--model", "m"]).command_parser
    assert as_flags("use `precision=\"fp32\"` and `k_shot=4`", evaluate) == "use --precision fp32 and --k-shot 4"


def _help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


@pytest.mark.full_suite
def test_every_flag_in_help_is_known_to_as_flags(capsys) -> None:
    """``_options`` reads argparse's private action list: every flag that each command's ``--help``
    shows (its sub-commands' too) must be among the flags it finds."""
    commands = re.findall(r"^    ([a-z][a-z-]+)  ", _help_of([], capsys), flags=re.M)
    assert {"train", "eval", "index", "models"} <= set(commands)
    every = set()
    for command in commands:
        parser = argparse.ArgumentParser()
        importlib.import_module(f"clipforge.cli.cmd_{command.replace('-', '_')}").add_arguments(parser)
        found = {o for action in _options(parser) for o in action.option_strings}
        helps = [_help_of([command], capsys)]
        helps += [_help_of([command, task], capsys) for task in re.findall(r"^    ([a-z][a-z-]+)", helps[0], re.M)]
        invocations = [m for text in helps for m in re.findall(r"^  (-\S.*?)(?:  |$)", text, re.M)]
        shown = {f for line in invocations for f in re.findall(r"--[a-z][a-z0-9-]*", line)}
        assert shown - {"--help"} <= found, (command, sorted(shown - found))
        every |= shown
    assert {"--model", "--k-shot", "--no-progress"} <= every  # the help was read, sub-commands' too


def test_a_library_error_reaches_the_user_as_one_line_with_flags(tmp_path, capsys) -> None:
    bad = tmp_path / "model.json"
    bad.write_text('{"embed_dim": 8, "nonsense": 1}')
    assert main(["train", "--data", "shapes", "--model", str(bad), "--out", str(tmp_path), "--steps", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clipforge train: error:") and "nonsense" in err[0]


def _text(node: ast.AST) -> str:
    """The literal text of a message expression, with ``{}`` for each interpolated value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(v) if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp):
        return _text(node.left) + _text(node.right)
    return " ".join(_text(child) for child in ast.iter_child_nodes(node))


def _raised_strings(path: Path) -> list[tuple[int, str]]:
    """The message text of every ``raise X(...)`` in ``path``."""
    return [
        (node.lineno, " ".join(_text(arg) for arg in node.exc.args))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
    ]


@pytest.mark.full_suite
def test_library_errors_do_not_name_cli_flags() -> None:
    flag = re.compile(r"(^|[\s(])--[a-z][a-z-]+")
    command = re.compile(r"`clipforge [^`]*`")  # a whole command to run is advice for anyone
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {text!r}"
        for path in sorted(SRC.rglob("*.py"))
        if "cli" not in path.relative_to(SRC).parts
        for line, text in _raised_strings(path)
        if flag.search(command.sub("", text)) and "pip install" not in text
    ]
    assert not offenders, "name the Python parameter (`name=value`) instead:\n" + "\n".join(offenders)


def test_an_error_about_a_file_says_which_flag_or_argument_gave_it() -> None:
    from clipforge.cli.main import given_as

    parser = build_parser()
    args = parser.parse_args(["classify", "a.png", "--model", "m.pt", "--labels", "a,b"])
    said = given_as("m.pt: not a model", args, args.command_parser)
    assert said == "m.pt: not a model (given as --model)"
    assert given_as("m.pt: bad; pass another --model", args, args.command_parser).endswith("--model")  # said once
    assert given_as("a.png: unreadable", args, args.command_parser) == "a.png: unreadable"  # one of many: no flag
    args = parser.parse_args(["convert", "deep.pt", "out"])
    assert given_as("deep.pt: not a model", args, args.command_parser) == "deep.pt: not a model (given as source)"
    args = parser.parse_args(["eval", "retrieval", "pairs.csv", "--model", "m"])
    assert given_as("pairs.csv:1: no column", args, args.command_parser).endswith("(given as data)")
    assert given_as("other.csv: no column", args, args.command_parser) == "other.csv: no column"
