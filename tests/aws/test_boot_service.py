"""Issue 21 item 8: Ray comes back after a reboot (serve_app/provisioning/boot_service.py).

Offline: cluster.yaml wires the unit, the bind mount and the boot scripts in; the unit the host
command installs parses; the head's boot.sh, run with a fake ``docker`` on PATH that records its
calls, recreates the container as Ray does, copies the bootstrap files back, runs the head's start
commands and deploys the saved Serve config, in that order.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import validate_config
from support import ROOT

from serve_app.provisioning import boot_service

CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())

FAKE_DOCKER = """#!/bin/bash
# Records each call (one JSON list per line) and what came on stdin for `exec -i`.
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$CALLS"
if [ "$1" = exec ] && [ "$2" = -i ]; then cat >> "$STDIN_LOG"; fi
exit 0
"""


def fake_bin(tmp_path: Path, **scripts: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_cluster_yaml_wires_the_boot_service_and_passes_rays_schema() -> None:
    validate_config(yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    docker = CLUSTER["docker"]
    options = docker["run_options"] + docker.get("head_run_options", []) + docker["worker_run_options"]
    # Ray hard-codes --rm; Docker refuses a restart policy with it, so `ray up` would fail.
    assert not any("--restart" in option for option in options)
    assert f"-v {boot_service.STATE_DIR}:{boot_service.STATE_DIR}" in docker["run_options"]
    assert boot_service.install_command() in CLUSTER["initialization_commands"]
    head = CLUSTER["head_start_ray_commands"]
    assert any(c.startswith("ray start --head") or "ray start --head" in c for c in head)
    write_head = [i for i, c in enumerate(head) if "boot_service write-head" in c]
    ray_start = [i for i, c in enumerate(head) if "ray start --head" in c]
    assert write_head and write_head[0] > ray_start[0]  # after Ray copied the bootstrap files in
    assert any("boot_service save-serve-config" in c and c.rstrip().endswith("&") for c in head)
    assert any("boot_service write-worker" in c for c in CLUSTER["worker_start_ray_commands"])
    for name, node_type in CLUSTER["available_node_types"].items():
        if name != CLUSTER["head_node_type"]:
            assert node_type["node_config"]["InstanceInitiatedShutdownBehavior"] == "terminate", name


def test_the_installed_unit_parses_and_runs_boot_sh_after_docker(tmp_path: Path) -> None:
    """The host command, run with a fake sudo (tee writes into tmp), installs a valid unit."""
    unit_file = tmp_path / "unit"
    env = fake_bin(
        tmp_path,
        sudo=f"""#!/bin/bash
echo "$*" >> {tmp_path}/sudo.log
if [ "$1" = tee ]; then cat > {unit_file}; fi
exit 0
""",
    )
    subprocess.run(["bash", "-c", boot_service.install_command()], env=env, check=True)
    assert unit_file.read_text() == boot_service.UNIT
    calls = (tmp_path / "sudo.log").read_text().splitlines()
    assert calls[0].startswith(f"install -d -o 1000 -g 1000 -m 700 {boot_service.STATE_DIR}")
    assert calls[1] == f"tee /etc/systemd/system/{boot_service.UNIT_NAME}"
    assert calls[2:] == ["systemctl daemon-reload", f"systemctl enable {boot_service.UNIT_NAME}"]
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(unit_file.read_text())
    assert unit.sections() == ["Unit", "Service", "Install"]
    assert "docker.service" in unit["Unit"]["After"].split() and unit["Unit"]["Requires"] == "docker.service"
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["ExecStart"] == f"/bin/bash {boot_service.STATE_DIR}/boot.sh"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.fixture
def head_state(tmp_path: Path) -> Path:
    """What the head's start commands leave: write-head run on the bootstrap config Ray copied."""
    home, state = tmp_path / "home", tmp_path / "state"
    home.mkdir()
    state.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(CLUSTER))
    (home / "ray_bootstrap_key.pem").write_text("KEY")
    assert boot_service.main(["write-head", "--home", str(home), "--state-dir", str(state)]) == 0
    (state / "serve.yaml").write_text("applications: []\n")
    return state


def test_head_boot_script_recreates_the_container_starts_ray_and_deploys_serve(
    head_state: Path, tmp_path: Path
) -> None:
    script = head_state / "boot.sh"
    assert os.access(script, os.X_OK)
    assert (head_state / "ray_bootstrap_key.pem").read_text() == "KEY"
    calls_file, stdin_file = tmp_path / "calls", tmp_path / "stdin"
    env = fake_bin(tmp_path, docker=FAKE_DOCKER)
    env.update(CALLS=str(calls_file), STDIN_LOG=str(stdin_file))
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
    verbs = [call[0] for call in calls]
    name = CLUSTER["docker"]["container_name"]
    image = CLUSTER["docker"]["head_image"]

    run_at = verbs.index("run")
    run = calls[run_at]
    assert ["rm", "-f", name] in calls[:run_at]
    # Ray's own docker run line: --rm, the name, host networking, the image, bash; our options.
    assert "--rm" in run and run[run.index("--name") + 1] == name and "--net=host" in run
    assert run[-2:] == [image, "bash"]
    assert f"{boot_service.STATE_DIR}:{boot_service.STATE_DIR}" in run
    assert any(arg.startswith("--env=RAYDIFFUSION_S3_BUCKET=") for arg in run)
    assert any(arg.startswith("--shm-size=") and arg.endswith("b") for arg in run), run
    assert "--gpus" not in run  # the head's container has no GPU

    execs = [call for call in calls[run_at + 1 :] if call[0] == "exec"]
    commands = [call[-1] for call in execs]
    copies = [c for c in commands if c.startswith("cat > ~/")]
    assert copies == [f"cat > ~/{f} && chmod 600 ~/{f}" for f in boot_service.BOOTSTRAP_FILES]
    assert stdin_file.read_text() == yaml.safe_dump(CLUSTER) + "KEY"
    starts = [c for c in commands if not c.startswith("cat > ~/")]
    expected = [*CLUSTER["head_start_ray_commands"], f"serve deploy {head_state}/serve.yaml"]
    assert starts == expected
    (ray_start,) = [c for c in starts if "ray start" in c]
    assert "--head" in ray_start and "--autoscaling-config=~/ray_bootstrap_config.yaml" in ray_start
    assert "--dashboard-host=127.0.0.1" in ray_start  # the head's own arguments, unchanged
    # Order: container, bootstrap files, Ray, then Serve.
    order = [commands.index(copies[0]), commands.index(ray_start), commands.index(expected[-1])]
    assert order == sorted(order)


def test_head_boot_script_without_a_saved_serve_config_only_starts_ray(
    head_state: Path, tmp_path: Path
) -> None:
    (head_state / "serve.yaml").unlink()
    calls_file = tmp_path / "calls"
    env = fake_bin(tmp_path, docker=FAKE_DOCKER)
    env.update(CALLS=str(calls_file), STDIN_LOG=str(tmp_path / "stdin"))
    subprocess.run(["bash", str(head_state / "boot.sh")], env=env, check=True, timeout=60)
    commands = [json.loads(line)[-1] for line in calls_file.read_text().splitlines()]
    assert any("ray start --head" in c for c in commands)
    assert not any(c.startswith("serve deploy") for c in commands)


def test_worker_boot_script_powers_the_worker_off(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    assert boot_service.main(["write-worker", "--state-dir", str(state)]) == 0
    env = fake_bin(tmp_path, shutdown=f'#!/bin/bash\necho "$*" > {tmp_path}/shutdown\n')
    subprocess.run(["bash", str(state / "boot.sh")], env=env, check=True, timeout=30)
    assert (tmp_path / "shutdown").read_text().split() == ["-h", "now"]


@pytest.fixture
def dashboard() -> Iterator[str]:
    status = {
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": {
            "raydiffusion": {
                "deployed_app_config": {"name": "raydiffusion", "import_path": "serve_app.app:build_app"}
            },
            "crashed": {"deployed_app_config": None},
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            assert self.path == "/api/serve/applications/"
            body = json.dumps(status).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_running_serve_config_is_saved_as_a_deployable_file(dashboard: str, tmp_path: Path) -> None:
    target = tmp_path / "serve.yaml"
    assert boot_service.save_serve_config(target, dashboard)
    saved = yaml.safe_load(target.read_text())
    assert saved == {
        "applications": [{"name": "raydiffusion", "import_path": "serve_app.app:build_app"}],
        "http_options": {"host": "0.0.0.0", "port": 8000},
    }
    assert not boot_service.save_serve_config(target, dashboard)  # unchanged: not rewritten
    assert shlex.split(f"serve deploy {target}")[-1] == str(target)
