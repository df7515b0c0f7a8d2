"""`serve deploy` that waits for the result: `python -m serve_app.ops.deploy deployments/aws.yaml`.

`serve deploy` exits 0 as soon as the dashboard has accepted the request, so a `build_app` that
raises (bad args, a missing secret, an import error in the image) is invisible to whoever ran it.
This sends the same request through the same client, then polls Serve until every application of
the file is RUNNING, and prints Serve's own error and exits 1 when one is not.

Every call has a client timeout: Ray's client sends its requests without one, so a dashboard
tunnel that accepts connections and never answers (``ray dashboard cluster.yaml &`` stopped by
the terminal, whose ssh -tt wants it) would hold `make deploy` forever. No dashboard at all is
said at once, with what to run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import requests
import yaml

TERMINAL_FAILURES = {"DEPLOY_FAILED", "UNHEALTHY"}
NO_DASHBOARD = (
    "no Ray dashboard answers at {address} ({reason}).\n"
    "Start the tunnel in another terminal and leave it running:  ray dashboard cluster.yaml\n"
    "(not `ray dashboard cluster.yaml &` in an interactive shell: the terminal stops it), or in the\n"
    "background without a terminal:  ray dashboard cluster.yaml </dev/null >/tmp/ray-dashboard.log 2>&1 &"
)


class DashboardUnreachable(Exception):
    """Nothing (or nothing that answers in time) at the dashboard address."""


class Refused(Exception):
    """Deploying would do harm or cannot work: the message says why and what to do instead."""


LOCAL_RAY = (
    "refusing to deploy {config} to {address}: that dashboard belongs to a Ray running on this machine "
    "(session {session}, e.g. `make run`), not to the cluster's tunnel.\n"
    "Stop it (Ctrl-C where `make run` runs), then start the tunnel and leave it running:  "
    "ray dashboard cluster.yaml\n"
    "(--allow-local deploys onto this machine's Ray on purpose.)"
)


def ray_temp_dir() -> Path:
    """Where a Ray on this machine keeps its sessions (Ray's default, or RAY_TMPDIR)."""
    return Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"


def local_ray_session(address: str, timeout_s: float, temp_dir: Path | None = None) -> str | None:
    """The session of the Ray behind ``address`` when that Ray runs on this machine, else None.

    The dashboard names its session (``/api/version``); a Ray started here keeps a folder of that
    name under its temp dir. Through `ray dashboard cluster.yaml` the session is the head's, which
    has no folder here, so the tunnel and a local `make run` are told apart without guessing from
    addresses (both answer on localhost:8265).
    """
    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=timeout_s) as response:
            session = json.loads(response.read()).get("session_name")
    except (urllib.error.URLError, TimeoutError, OSError, ValueError, AttributeError):
        return None  # not a dashboard we can read: the deploy itself reports what is wrong
    if isinstance(session, str) and session and ((temp_dir or ray_temp_dir()) / session).is_dir():
        return session
    return None


def probe_dashboard(address: str, timeout_s: float) -> None:
    """Raise DashboardUnreachable unless the dashboard answers within ``timeout_s``."""
    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError:
        return  # something that speaks HTTP answered: the client reports what is wrong with it
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DashboardUnreachable(NO_DASHBOARD.format(address=address, reason=reason)) from error


def _client(address: str, request_timeout_s: float) -> Any:
    """Ray's Serve client, every request of it bounded by ``request_timeout_s``."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    class TimedClient(ServeSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", request_timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    return TimedClient(address)


def _app_state(details: dict[str, Any], name: str) -> tuple[str, float | None, str]:
    app = (details.get("applications") or {}).get(name)
    if app is None:
        return "NOT_STARTED", None, ""
    problems = [app.get("message") or ""]
    for deployment_name, deployment in (app.get("deployments") or {}).items():
        if deployment.get("message") and deployment.get("status") not in {
            "HEALTHY",
            "UPSCALING",
            "DOWNSCALING",
        }:
            problems.append(f"{deployment_name}: {deployment['message']}")
    return (
        app.get("status", "NOT_STARTED"),
        app.get("last_deployed_time_s"),
        "\n".join(p for p in problems if p),
    )


def deploy_and_wait(
    config_path: Path,
    address: str,
    timeout_s: float,
    poll_s: float = 2.0,
    request_timeout_s: float = 30.0,
    allow_local: bool = False,
) -> int:
    from ray.exceptions import AuthenticationError

    try:
        return _deploy_and_wait(config_path, address, timeout_s, poll_s, request_timeout_s, allow_local)
    except (DashboardUnreachable, Refused) as error:
        print(str(error), file=sys.stderr)
        return 2
    except AuthenticationError as error:
        print(
            f"the Ray dashboard at {address} asks for Ray's auth token "
            f"({str(error).strip().splitlines()[0] if str(error).strip() else 'no detail'}).\n"
            "Ray 2.60 turns token authentication on for a cluster it starts when a token exists "
            "(~/.ray/auth_token): copy the head's token to ~/.ray/auth_token on this machine "
            "(`ray get-auth-token` on the head prints it), export RAY_AUTH_MODE=token, "
            "and run make deploy again.",
            file=sys.stderr,
        )
        return 2
    except requests.RequestException as error:  # a tunnel that stopped answering mid-deploy
        print(NO_DASHBOARD.format(address=address, reason=error), file=sys.stderr)
        return 2


def load_config(config_path: Path) -> Any:
    """The Serve config, or Refused with one line naming the file and what is wrong in it."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        return ServeDeploySchema.model_validate(yaml.safe_load(config_path.read_text()))
    except OSError as error:
        raise Refused(f"cannot read {config_path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise Refused(f"{config_path} is not valid YAML: {str(error).splitlines()[0]}") from error
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise Refused(
            f"{config_path} is not a Serve config: {where}: {first['msg']} ({error.error_count()} problem(s))"
        ) from error


def _deploy_and_wait(
    config_path: Path,
    address: str,
    timeout_s: float,
    poll_s: float,
    request_timeout_s: float,
    allow_local: bool = False,
) -> int:
    config = load_config(config_path)
    names = [app.name for app in config.applications]
    probe_dashboard(address, min(request_timeout_s, 10.0))
    if not allow_local and (session := local_ray_session(address, min(request_timeout_s, 10.0))):
        raise Refused(LOCAL_RAY.format(config=config_path, address=address, session=session))
    client = _client(address, request_timeout_s)
    before = {name: _app_state(client.get_serve_details(), name)[1] for name in names}
    client.deploy_applications(config.model_dump(exclude_unset=True))
    print(f"sent {config_path} to {address}; waiting for {', '.join(names)} to be RUNNING", flush=True)

    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    while True:
        details = client.get_serve_details()
        pending = []
        for name in names:
            status, deployed_at, problem = _app_state(details, name)
            # Until the controller has taken the new config, the status shown is the old one's.
            fresh = deployed_at is not None and deployed_at != before[name]
            if fresh and status in TERMINAL_FAILURES:
                print(
                    f"application {name}: {status}\n{problem or '(Serve gave no message)'}", file=sys.stderr
                )
                return 1
            if not (fresh and status == "RUNNING"):
                pending.append(name)
            if last.get(name) != status:
                print(f"  {name}: {status}", flush=True)
                last[name] = status
        if not pending:
            print("deployed: " + ", ".join(f"{name} RUNNING" for name in names))
            return 0
        if time.monotonic() > deadline:
            print(
                f"timed out after {timeout_s:.0f}s; still not RUNNING: {', '.join(pending)}", file=sys.stderr
            )
            return 1
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve_app.ops.deploy", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("config", type=Path, help="a Serve config file, e.g. deployments/aws.yaml")
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_DASHBOARD_ADDRESS", "http://127.0.0.1:8265"),
        help="the dashboard (on AWS: `ray dashboard cluster.yaml` forwards it to localhost:8265)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for RUNNING")
    parser.add_argument(
        "--allow-local",
        action="store_true",
        help="deploy even when the dashboard is a Ray on this machine (refused by default: `make run`)",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=30.0, help="seconds one call to the dashboard may take"
    )
    args = parser.parse_args(argv)
    return deploy_and_wait(
        args.config,
        args.address,
        args.timeout,
        request_timeout_s=args.request_timeout,
        allow_local=args.allow_local,
    )


if __name__ == "__main__":
    raise SystemExit(main())
