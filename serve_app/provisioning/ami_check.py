"""Is an AMI one the cluster can boot? Checked before anything is created with it.

`ray up` with a Windows or an ARM image fails late and obscurely (the head never answers SSH, or
Docker pulls an x86_64 image onto arm64). What every node needs: Linux on x86_64 (the image is
built `--platform linux/amd64`), an EBS root, and for the GPU workers the NVIDIA driver with
Docker and the NVIDIA container toolkit, which AWS's Deep Learning AMIs carry; a custom image is
accepted with a note saying so, since its contents cannot be read from its description.
"""

from __future__ import annotations

from typing import Any


class UnusableImage(ValueError):
    """The AMI cannot run the cluster; the message says why and what to pass instead."""


def check_ami(image: dict[str, Any]) -> str | None:
    """Raise UnusableImage for an AMI the cluster cannot boot; return a note for a custom one."""
    ami = image.get("ImageId", "the AMI")
    name = image.get("Name") or ""
    platform = (image.get("PlatformDetails") or image.get("Platform") or "Linux/UNIX").lower()
    if "windows" in platform:
        raise UnusableImage(
            f"{ami} ({name!r}) is a Windows image; the cluster needs Linux on x86_64: "
            "leave out --ami for AWS's GPU Deep Learning AMI"
        )
    if image.get("Architecture") != "x86_64":
        raise UnusableImage(
            f"{ami} ({name!r}) is for {image.get('Architecture')}; the nodes run the x86_64 image "
            "`make image` builds: pick an x86_64 AMI, or leave out --ami"
        )
    if image.get("RootDeviceType", "ebs") != "ebs":
        raise UnusableImage(f"{ami} ({name!r}) has an instance-store root; Ray's AWS nodes need an EBS root")
    if "deep learning" not in name.lower():
        return (
            f"{ami} is not an AWS Deep Learning AMI: it must carry the NVIDIA driver, Docker and the "
            "NVIDIA container toolkit for the GPU workers"
        )
    return None
