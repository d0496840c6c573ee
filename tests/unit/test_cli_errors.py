"""`genai` ends a failure in one `error:` line (exit 2 when the input is at fault), with the
traceback only under -v, and refuses a bad question before anything heavy loads."""

from __future__ import annotations

import socket

import pytest

from flows.cli.failures import report_failure
from flows.cli.main import main


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_empty_question_is_refused_before_the_index_opens(monkeypatch, capsys):
    import pipelines.rag.chain

    def must_not_open(*args, **kwargs):
        raise AssertionError("the chain was opened for an empty question")

    monkeypatch.setattr(pipelines.rag.chain, "open_chain", must_not_open)
    assert main(["ask", "  "]) == 2
    assert capsys.readouterr().err == "error: question: empty; ask something\n"


def test_a_missing_model_version_is_one_error_line(capsys):
    args = ["serve", "--model", "models:/genai-nothing/999", "--port", str(free_port())]
    assert main(args) == 2
    err = capsys.readouterr().err  # (log lines may come first: a new MLflow store says so)
    assert "Traceback" not in err and "MlflowException" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: models:/genai-nothing/999: 'genai-nothing' has no version 999; no model named "
        "'genai-nothing' is registered; run the flow that registers it first"
    ]


def test_a_missing_path_names_it(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert main(["serve", "--model", str(missing), "--port", str(free_port())]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {missing} is not an HF model dir")


def test_an_unexpected_error_names_its_type_and_verbose_adds_the_traceback(capsys):
    def broken():
        raise TypeError("unsupported operand")

    with pytest.raises(TypeError) as caught:
        broken()
    assert report_failure(caught.value) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: TypeError: unsupported operand",
        "  (-v shows the traceback)",
    ]
    assert report_failure(caught.value, verbose=True) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err


def test_error_lines_are_redacted_and_detail_lines_are_indented(capsys):
    err = OSError("POST http://u:Xy7Qw9Lm3Np5Rt@h/v1 failed\nlog tail line")
    assert report_failure(err) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: POST http://***@h/v1 failed",
        "  log tail line",
    ]
