"""`raydiffusion-aws` answers a missing credential, an unreachable endpoint, a bad argument and an
unusable AMI with one line saying what to do, never a traceback; bootstrap says who may reach what."""

from __future__ import annotations

import socket

import pytest

from serve_app.provisioning.ami_check import UnusableImage, check_ami
from serve_app.provisioning.cli import main, ports_plan

ARGS = ["--region", "us-west-2", "--bucket", "b"]


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup either


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.mark.parametrize("command", ["status", "bootstrap"])
def test_missing_credentials_are_one_line_even_for_a_dry_run(
    command: str, no_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--ssh-cidr", "198.51.100.7/32", "--dry-run"] if command == "bootstrap" else []
    assert main([command, *ARGS, *extra]) == 2
    line = one_line(capsys.readouterr().err)
    assert "no AWS credentials" in line and "aws configure" in line and "--dry-run" in line


def test_an_unreachable_endpoint_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert main(["status", *ARGS]) == 2
    assert "cannot reach AWS" in one_line(capsys.readouterr().err)


def test_bootstrap_asks_who_may_ssh_and_a_bad_cidr_is_an_argument_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bootstrap", *ARGS])
    assert exited.value.code == 2 and "--ssh-cidr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bootstrap", *ARGS, "--ssh-cidr", "my-laptop"])
    assert "Traceback" not in capsys.readouterr().err


def test_the_plan_says_which_ports_open_to_whom() -> None:
    closed, anywhere = ports_plan(None, "198.51.100.7/32"), ports_plan("203.0.113.0/24", "0.0.0.0/0")
    assert "198.51.100.7/32" in closed[0] and "nobody else" in closed[1]
    assert "everyone" in anywhere[0] and "203.0.113.0/24" in anywhere[1]


def test_an_ami_the_cluster_cannot_boot_is_refused_and_a_custom_one_noted() -> None:
    dlami = {"ImageId": "ami-1", "Name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)"}
    assert check_ami({**dlami, "Architecture": "x86_64", "PlatformDetails": "Linux/UNIX"}) is None
    with pytest.raises(UnusableImage, match="Windows"):
        check_ami({"ImageId": "ami-2", "Name": "Windows_Server-2022", "Architecture": "x86_64",
                   "Platform": "windows", "PlatformDetails": "Windows"})
    with pytest.raises(UnusableImage, match="arm64"):
        check_ami({**dlami, "Architecture": "arm64"})
    note = check_ami({"ImageId": "ami-3", "Name": "my-ubuntu", "Architecture": "x86_64"})
    assert note and "NVIDIA driver" in note
