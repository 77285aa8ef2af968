"""A reader that stops reading (`clipforge models --pretrained | head`) ends the command quietly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipforge.cli import cmd_models
from clipforge.cli.main import EXIT_CLOSED_PIPE, main

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC)}


@pytest.mark.full_suite
def test_a_closed_pipe_ends_the_command_quietly() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first write: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "clipforge", "models", "--pretrained"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
    finally:
        os.close(write)
    assert done.stderr == ""  # no "Broken pipe", no traceback, no "Exception ignored"
    assert done.returncode == EXIT_CLOSED_PIPE == 128 + 13  # as if killed by SIGPIPE, like cat or grep


@pytest.mark.full_suite
def test_piping_into_head_prints_the_first_line_and_no_error() -> None:
    cmd = f"set -o pipefail; {sys.executable} -m clipforge models --pretrained | head -1"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=ENV)
    assert done.stdout.split()[:2] == ["name", "act"]
    assert done.stderr == ""
    # head may exit before or after the last write: either the whole output fitted the pipe, or not
    assert done.returncode in (0, EXIT_CLOSED_PIPE)


def test_a_broken_pipe_elsewhere_is_an_error(monkeypatch, capsys) -> None:
    """EPIPE from a socket or a worker's pipe, with stdout still read, is the command's error."""

    def run(args) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cmd_models, "run", run)
    assert main(["models"]) == 1
    assert capsys.readouterr().err == "clipforge models: error: [Errno 32] Broken pipe\n"
