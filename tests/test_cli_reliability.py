"""The command line refuses bad values in one line with exit status 2, and reports an
unwritable stdout in one line instead of a traceback (issue 13, item 17)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nn_from_scratch import cli


def run(*args: str, stdout=subprocess.PIPE, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "nn_from_scratch", "train", *args], stdout=stdout, stderr=subprocess.PIPE,
        text=True, timeout=timeout, env=env,
    )


BAD = {
    ("--lr", "nan"): "--lr: expected a positive finite number, got 'nan'",
    ("--lr", "inf"): "--lr: expected a positive finite number, got 'inf'",
    ("--lr", "-0.1"): "--lr: expected a positive finite number",
    ("--lr", "0"): "--lr: expected a positive finite number",
    ("--train-size", "0"): "--train-size: expected a positive integer, got '0'",
    ("--train-size", "-5"): "--train-size: expected a positive integer, got '-5'",
    ("--seed", "-1"): "--seed: expected an integer >= 0, got '-1'",
    ("--epochs", "0"): "--epochs: expected a positive integer",
    ("--batch-size", "2.5"): "--batch-size: expected a positive integer, got '2.5'",
}


@pytest.mark.parametrize("argument", BAD, ids=[" ".join(a) for a in BAD])
def test_a_bad_value_exits_2_with_one_line(argument):
    # --train-size 100 keeps a run that wrongly starts training short.
    extra = () if argument[0] == "--train-size" else ("--train-size", "100")
    result = run(*argument, *extra, "--no-progress", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("python -m nn_from_scratch train: error: argument ") and BAD[argument] in lines[0]


def test_argument_types_in_process():
    # The same checks, without a subprocess: main returns/raises SystemExit(2).
    for argument in BAD:
        extra = () if argument[0] == "--train-size" else ("--train-size", "100")
        with pytest.raises(SystemExit) as caught:
            cli.main(["train", *argument, *extra, "--no-progress"])
        assert caught.value.code == 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_gives_one_line_not_a_traceback():
    with open("/dev/full", "w") as full:
        result = run("--train-size", "100", "--no-progress", stdout=full)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines() == ["python -m nn_from_scratch: cannot write the output: No space left on device"]


def test_a_closed_pipe_gives_one_line_not_a_traceback():
    reader, writer = os.pipe()
    os.close(reader)
    with os.fdopen(writer, "w") as closed:
        result = run("--train-size", "100", "--no-progress", stdout=closed)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["python -m nn_from_scratch: cannot write the output: Broken pipe"]
