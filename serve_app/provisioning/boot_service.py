"""Ray back after a node reboots (issue 21 item 8).

What Ray 2.60's cluster launcher really does (``ray/autoscaler/_private/command_runner.py`` and
``docker.py``): it creates the node's container once, with ``docker run --rm --name
<container_name> -d -it ... --net=host <image> bash`` (``--rm`` is hard-coded, and Docker refuses
a restart policy on an ``--rm`` container, so ``--restart`` in ``run_options`` would break
``ray up``), copies ``~/ray_bootstrap_config.yaml`` and ``~/ray_bootstrap_key.pem`` into it, and
runs the start commands once through ``docker exec``. After a reboot the container is gone (Docker
removes ``--rm`` containers that stopped) and nothing runs the start commands again; the Serve
config (kept in the head's GCS, which does not outlive Ray) is gone too.

So, on every node, ``initialization_commands`` (on the host) install a systemd unit that runs
``/var/lib/raydiffusion/boot.sh`` once Docker is up, and ``run_options`` bind-mount that folder
into the container, so what the container writes there survives the reboot:

- The head's start commands run ``write-head`` (this module, in the container): it writes
  ``boot.sh`` from the cluster config Ray copied in, with Ray's own ``docker_start_cmds`` and
  ``with_docker_exec`` (the same ``docker run`` and ``docker exec`` lines Ray ran), and keeps a
  copy of the bootstrap config and key. ``save-serve-config`` (in the background) keeps the
  running Serve config in ``serve.yaml``, which ``boot.sh`` deploys again.
- A worker's start commands run ``write-worker``: its ``boot.sh`` powers the instance off
  (``InstanceInitiatedShutdownBehavior: terminate`` in cluster.yaml ends its billing); the
  autoscaler launches a fresh worker when one is needed. A worker knows neither the cluster's
  config nor its own image, and a fresh one is the state Ray expects.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from ray.autoscaler._private.docker import docker_start_cmds, with_docker_exec

STATE_DIR = Path("/var/lib/raydiffusion")
UNIT_NAME = "raydiffusion-boot.service"
BOOTSTRAP_FILES = ("ray_bootstrap_config.yaml", "ray_bootstrap_key.pem")
# The rayproject images' user and home (HOME in the image's environment, which Ray reads too).
CONTAINER_HOME = "/home/ray"
DASHBOARD = "http://127.0.0.1:8265"

UNIT = f"""[Unit]
Description=raydiffusion: start the Ray container again after a reboot
Wants=network-online.target
After=docker.service network-online.target
Requires=docker.service
ConditionPathExists={STATE_DIR}/boot.sh

[Service]
Type=oneshot
ExecStart=/bin/bash {STATE_DIR}/boot.sh
StandardOutput=append:/var/log/raydiffusion-boot.log
StandardError=append:/var/log/raydiffusion-boot.log
TimeoutStartSec=1800

[Install]
WantedBy=multi-user.target
"""


def install_command() -> str:
    """The host command (cluster.yaml ``initialization_commands``) that installs the unit and the
    folder the container bind-mounts (owned by uid 1000: the image's ``ray`` user)."""
    unit = " ".join(shlex.quote(line) for line in UNIT.splitlines())
    return (
        f"sudo install -d -o 1000 -g 1000 -m 700 {STATE_DIR} && "
        f"printf '%s\\n' {unit} | sudo tee /etc/systemd/system/{UNIT_NAME} >/dev/null && "
        f"sudo systemctl daemon-reload && sudo systemctl enable {UNIT_NAME}"
    )


def _shm_option(options: list[str]) -> str:
    """Ray's ``--shm-size`` (``_auto_configure_shm``), computed on the host at boot as Ray does."""
    if any("--shm-size" in option for option in options):
        return ""
    return (
        '--shm-size=$(awk \'/MemAvailable/ {printf "%d", '
        "($2 * 1024 * 0.3 * 1.1 < 200e9 ? $2 * 1024 * 0.3 * 1.1 : 200e9)}' /proc/meminfo)b"
    )


def head_boot_script(cluster: dict[str, Any], state_dir: Path = STATE_DIR) -> str:
    """The head's ``boot.sh``: Ray's container, its bootstrap files, ``ray start`` with the head's
    start commands, then ``serve deploy`` of the last Serve config the head ran."""
    docker = cluster["docker"]
    name = docker.get("container_name", "ray_container")
    image = docker.get("head_image") or docker["image"]
    options = list(docker.get("run_options", [])) + list(docker.get("head_run_options", []))
    shm = _shm_option(options)
    run = docker_start_cmds(
        cluster["auth"]["ssh_user"],
        image,
        {},  # file_mounts: {} in cluster.yaml; the bootstrap files are copied, as Ray does
        name,
        options + ([shm] if shm else []),
        cluster["cluster_name"],
        CONTAINER_HOME,
        "docker",
    )
    starts = with_docker_exec(list(cluster.get("head_start_ray_commands", [])), name, "docker")
    state = shlex.quote(str(state_dir))
    lines = [
        "#!/bin/bash",
        "# Written by serve_app.provisioning.boot_service write-head: run at boot by " + UNIT_NAME,
        "set -u",
        'echo "raydiffusion boot: $(date -u +%FT%TZ)"',
        "for i in $(seq 90); do docker info >/dev/null 2>&1 && break; sleep 2; done",
        f"docker rm -f {name} >/dev/null 2>&1 || true",
        f"docker image inspect {shlex.quote(image)} >/dev/null 2>&1 || docker pull {shlex.quote(image)}",
        run,
    ]
    for file in BOOTSTRAP_FILES:
        target = shlex.quote(f"cat > ~/{file} && chmod 600 ~/{file}")
        lines.append(f"docker exec -i {name} /bin/bash -c {target} < {state}/{file}")
    lines += starts
    deploy = shlex.quote(f"serve deploy {state_dir}/serve.yaml")
    lines += [
        f"if [ -s {state}/serve.yaml ]; then",
        "  for i in $(seq 30); do",
        f"    docker exec {name} /bin/bash -c {deploy} && break",
        "    sleep 10",
        "  done",
        "fi",
        'echo "raydiffusion boot: done $(date -u +%FT%TZ)"',
        "",
    ]
    return "\n".join(lines)


WORKER_BOOT = f"""#!/bin/bash
# Written by serve_app.provisioning.boot_service write-worker: run at boot by {UNIT_NAME}.
# A rebooted worker's container and Ray are gone; the autoscaler launches a fresh worker when one
# is needed. Power off (InstanceInitiatedShutdownBehavior: terminate ends the instance) rather
# than bill a GPU that no Ray runs on.
echo "raydiffusion boot: worker rebooted, shutting down $(date -u +%FT%TZ)"
shutdown -h now
"""


def write_head(home: Path, state_dir: Path) -> Path:
    """In the head's container: keep the bootstrap files and write ``boot.sh`` beside them."""
    cluster = yaml.safe_load((home / BOOTSTRAP_FILES[0]).read_text())
    for file in BOOTSTRAP_FILES:
        if (home / file).exists():
            shutil.copyfile(home / file, state_dir / file)
            (state_dir / file).chmod(0o600)
    script = state_dir / "boot.sh"
    script.write_text(head_boot_script(cluster, state_dir))
    script.chmod(0o700)
    return script


def write_worker(state_dir: Path) -> Path:
    script = state_dir / "boot.sh"
    script.write_text(WORKER_BOOT)
    script.chmod(0o700)
    return script


def serve_config(dashboard: str = DASHBOARD) -> dict[str, Any] | None:
    """The Serve config running now (as ``serve config`` reads it), as one deployable file."""
    with urllib.request.urlopen(f"{dashboard}/api/serve/applications/", timeout=10) as response:
        status = json.load(response)
    applications = [
        app["deployed_app_config"]
        for app in (status.get("applications") or {}).values()
        if app.get("deployed_app_config")
    ]
    if not applications:
        return None
    document: dict[str, Any] = {"applications": applications}
    http = status.get("http_options") or {}
    if http.get("host") or http.get("port"):
        document["http_options"] = {k: http[k] for k in ("host", "port") if http.get(k) is not None}
    return document


def save_serve_config(target: Path, dashboard: str = DASHBOARD) -> bool:
    """Write the running Serve config to ``target`` when it changed; True when written."""
    document = serve_config(dashboard)
    if document is None:
        return False
    text = yaml.safe_dump(document, sort_keys=False)
    if target.exists() and target.read_text() == text:
        return False
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(text)
    partial.replace(target)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.provisioning.boot_service")
    parser.add_argument("action", choices=("write-head", "write-worker", "save-serve-config", "unit"))
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument("--home", type=Path, default=Path.home())
    parser.add_argument("--every", type=float, default=0, help="save-serve-config: repeat every N s")
    args = parser.parse_args(argv)
    if args.action == "unit":
        print(UNIT, end="")
    elif args.action == "write-head":
        print(f"wrote {write_head(args.home, args.state_dir)}")
    elif args.action == "write-worker":
        print(f"wrote {write_worker(args.state_dir)}")
    else:
        while True:
            try:
                if save_serve_config(args.state_dir / "serve.yaml"):
                    print("saved the Serve config", flush=True)
            except (OSError, ValueError) as error:  # the dashboard not up yet, or restarting
                print(f"Serve config not saved: {error}", file=sys.stderr, flush=True)
            if not args.every:
                break
            time.sleep(args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
