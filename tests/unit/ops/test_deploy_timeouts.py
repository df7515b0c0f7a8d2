"""`make deploy` never waits forever on a dashboard tunnel, and says what to run when there is none."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from serve_app.ops.deploy import main

CONFIG = Path(__file__).resolve().parents[3] / "deployments" / "aws.yaml"


def test_no_dashboard_is_said_at_once_with_the_command_to_run(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert main([str(CONFIG), "--address", f"http://127.0.0.1:{port}", "--request-timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert f"no Ray dashboard answers at http://127.0.0.1:{port}" in err
    assert "ray dashboard cluster.yaml" in err and "</dev/null" in err


def test_a_tunnel_that_accepts_and_never_answers_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    # What a stopped `ray dashboard ... &` looks like: the local port accepts, nothing ever answers.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        code = main([str(CONFIG), "--address", f"http://127.0.0.1:{port}", "--request-timeout", "1"])
    assert code == 2
    assert "timed out" in capsys.readouterr().err
