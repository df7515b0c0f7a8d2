"""`make run`: `serve run CONFIG` with its logs in a file, and a start a person can read.

`serve run` prints several hundred lines of Ray's own start-up before the first request can be
served, and says nothing a newcomer needs (where to point a browser, what it serves, how to stop).
This runs it as a child with its output in ``.cache/serve-run.log``, waits until a model replica
can take work (``/readyz``), and then prints the address, the playground, the models and LoRAs of
the config's catalogue, the log's path and how to stop. Ctrl-C reaches `serve run` itself (same
process group), which shuts Serve down; this waits for it to finish.

``RAYDIFFUSION_RUN_VERBOSE=1`` leaves Ray's output on the terminal instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

LOG = Path(".cache/serve-run.log")
READY_TIMEOUT_S = 900.0  # a first start on a busy 2-core laptop builds nothing, but loads slowly
POLL_S = 0.5


def served_address(config: dict[str, Any]) -> str:
    http = config.get("http_options") or {}
    host = http.get("host", "127.0.0.1")
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{http.get('port', 8000)}"


def catalogue_lines(config: dict[str, Any]) -> list[str]:
    """One line per application and model: `tiny-sd (default; LoRAs: tiny-ink)`."""
    lines = []
    for app in config.get("applications") or []:
        prefix = (app.get("route_prefix") or "/").rstrip("/")
        models = (app.get("args") or {}).get("models") or []
        described = []
        for model in models:
            loras = [lora.get("name") for lora in model.get("loras") or []]
            notes = ["default"] if model.get("default") else []
            notes += [f"LoRAs: {', '.join(loras)}"] if loras else []
            described.append(f"{model.get('name')}" + (f" ({'; '.join(notes)})" if notes else ""))
        what = ", ".join(described) if described else "the model of its `model` setting"
        lines.append(f"  Models{f' at {prefix}/' if prefix else ''}: {what}")
    return lines


def banner(config: dict[str, Any], log: Path | None) -> str:
    base = served_address(config)
    lines = [
        f"raydiffusion is serving on {base}/",
        f"  Browser playground: {base}/",
        *catalogue_lines(config),
        f"  API docs: {base}/docs    OpenAI SDK base_url: {base}/v1",
        f"  Try: curl -o cat.png '{base}/imagine?prompt=a+cat'",
    ]
    if log is not None:
        lines.append(f"  Logs: {log} (Ray's own: /tmp/ray/session_latest/logs)")
    lines.append("Press Ctrl-C to stop.")
    return "\n".join(lines)


def readiness(base: str, timeout_s: float = 2.0) -> tuple[int | None, dict[str, Any]]:
    """(HTTP status, body) of /readyz; (None, {}) while nothing answers."""
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except ValueError:
            return error.code, {}
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, ValueError):
        return None, {}


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run(config_path: Path, log: Path = LOG, verbose: bool = False) -> int:
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        print(f"make run: cannot read {config_path}: {error}", file=sys.stderr)
        return 2
    base = served_address(config)
    if readiness(base)[0] is not None:
        print(
            f"make run: something already answers on {base} (another `make run`?). "
            "Stop it with Ctrl-C in its terminal, then run this again.",
            file=sys.stderr,
        )
        return 2
    serve = Path(sys.executable).with_name("serve")
    command = [str(serve) if serve.exists() else "serve", "run", str(config_path)]
    log.parent.mkdir(parents=True, exist_ok=True)
    out = None if verbose else log.open("w")
    print(f"Starting raydiffusion ({config_path}); the first start takes a minute or two…", flush=True)
    child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT if out else None)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        said: str | None = None
        while True:
            code = child.poll()
            if code is not None:
                print(f"make run: `serve run` exited with code {code}; the end of {log}:", file=sys.stderr)
                print(tail(log), file=sys.stderr)
                return code or 1
            status, body = readiness(base)
            if status == 200:
                break
            detail = body.get("detail") if status is not None else None
            if detail and detail != said:
                print(f"  {detail}", flush=True)
                said = detail
            if time.monotonic() > deadline:
                print(f"make run: not ready after {READY_TIMEOUT_S:.0f} s; see {log}", file=sys.stderr)
                child.terminate()
                return 1
            time.sleep(POLL_S)
        print(banner(config, None if verbose else log), flush=True)
        return child.wait()
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached `serve run` too: let it shut Serve down.
        print("\nStopping (Serve shuts down its replicas)…", flush=True)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        print("Stopped.")
        return 0
    finally:
        if child.poll() is None:
            child.terminate()
        if out is not None:
            out.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="a Serve config, e.g. deployments/local.yaml")
    parser.add_argument("--log", type=Path, default=LOG, help=f"where Ray's output goes (default {LOG})")
    args = parser.parse_args(argv)
    return run(args.config, args.log, verbose=os.environ.get("RAYDIFFUSION_RUN_VERBOSE") == "1")


if __name__ == "__main__":
    raise SystemExit(main())
