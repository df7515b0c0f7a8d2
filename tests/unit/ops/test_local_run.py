"""`make run`'s start: what a person needs once it is ready, and a refusal when the port is taken."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
import yaml
from support import ROOT

from serve_app.ops.local_run import banner, run

LOCAL = ROOT / "deployments" / "local.yaml"


def test_the_banner_says_where_to_point_a_browser_what_is_served_and_how_to_stop() -> None:
    config = yaml.safe_load(LOCAL.read_text())
    text = banner(config, Path(".cache/serve-run.log"))
    assert "Browser playground: http://127.0.0.1:8000/" in text
    for app in config["applications"]:
        for model in app["args"]["models"]:
            assert model["name"] in text
            for lora in model.get("loras") or []:
                assert lora["name"] in text
    assert "Ctrl-C" in text and ".cache/serve-run.log" in text


def test_a_second_make_run_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "local.yaml"
    port = server.server_address[1]
    config.write_text(yaml.safe_dump({"http_options": {"host": "127.0.0.1", "port": port}}))
    try:
        assert run(config, tmp_path / "serve-run.log") == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err.strip()
    assert "already answers" in err and "\n" not in err
    assert not (tmp_path / "serve-run.log").exists()  # nothing was started
