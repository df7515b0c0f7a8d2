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


class _Dashboard:
    """A stand-in dashboard on loopback that names its Ray session, recording every path asked."""

    def __init__(self, session: str) -> None:
        import http.server
        import json
        import threading

        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                body = json.dumps({"version": "4", "ray_version": "2.60.0", "session_name": session}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_local_make_run_ray_is_refused_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make deploy` with `make run` still up reaches this machine's Ray, not the cluster: refused."""
    from serve_app.ops.deploy import local_ray_session

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray" / "session_2026-12-04_18-00-00_1").mkdir(parents=True)
    here = _Dashboard("session_2026-12-04_18-00-00_1")
    head = _Dashboard("session_on_the_head")  # what the tunnel shows: no such session here
    try:
        assert main([str(CONFIG), "--address", here.address, "--request-timeout", "2"]) == 2
        err = capsys.readouterr().err
        assert "refusing to deploy" in err and "make run" in err and "ray dashboard cluster.yaml" in err
        assert all(path == "/api/version" for path in here.paths)  # nothing was deployed
        assert local_ray_session(head.address, 2) is None
        assert local_ray_session(here.address, 2) == "session_2026-12-04_18-00-00_1"
    finally:
        here.close()
        head.close()


def test_a_bad_config_is_one_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert main([str(missing), "--address", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.strip() == f"cannot read {missing}: No such file or directory"
    broken = tmp_path / "broken.yaml"
    broken.write_text("applications: [\n")
    assert main([str(broken), "--address", "http://127.0.0.1:9"]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("applications:\n  - name: x\n    import_path: 7\n    nonsense: 1\n")
    assert main([str(wrong), "--address", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "is not a Serve config" in err and "Traceback" not in err
