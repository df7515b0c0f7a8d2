"""The machine image every node boots: AWS's current GPU Deep Learning Base AMI, or `--ami`."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from serve_app.provisioning.ami_check import UnusableImage, check_ami
from serve_app.provisioning.stack.base import Family, ProvisioningError


class MachineImage(Family):
    def resolve(self, current: str | None = None) -> str:
        """--ami, else the AMI cluster.yaml already holds (``current``), else AWS's parameter.

        Keeping the current one is what keeps the head: a new ImageId changes its launch hash and
        `ray up` would replace it. --refresh-ami asks for the parameter's newest on purpose.
        """
        c = self.config
        if c.ami:
            ami, source = c.ami, "--ami"
        elif current and current.startswith("ami-") and not c.refresh_ami and self._exists(current):
            ami, source = current, "cluster.yaml; --refresh-ami for the newest"
        else:
            try:
                ami = self.ctx.ssm.get_parameter(Name=c.ami_parameter)["Parameter"]["Value"]
            except ClientError as error:
                raise ProvisioningError(
                    f"cannot read the AMI parameter {c.ami_parameter} in {c.region}: pass --ami"
                ) from error
            source = c.ami_parameter
        images = self._images(ami)
        if not images:
            raise ProvisioningError(f"AMI {ami} does not exist in {c.region}")
        self.ctx.say("ami", f"{ami} {images[0].get('Name', '')!r} (from {source})")
        try:
            note = check_ami(images[0])  # Linux on x86_64 with an EBS root (ami_check.py)
        except UnusableImage as error:
            raise ProvisioningError(str(error)) from error
        if note:
            self.ctx.say("note", note)
        return ami

    def _images(self, ami: str) -> list[dict[str, Any]]:
        try:
            return self.ctx.ec2.describe_images(ImageIds=[ami])["Images"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code", "").startswith("InvalidAMIID"):
                return []
            raise

    def _exists(self, ami: str) -> bool:
        return bool(self._images(ami))
