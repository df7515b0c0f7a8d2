"""The machine image every node boots: AWS's current GPU Deep Learning Base AMI, or `--ami`."""

from __future__ import annotations

from botocore.exceptions import ClientError

from serve_app.provisioning.stack.base import Family, ProvisioningError


class MachineImage(Family):
    def resolve(self) -> str:
        c = self.config
        if c.ami:
            ami, source = c.ami, "--ami"
        else:
            try:
                ami = self.ctx.ssm.get_parameter(Name=c.ami_parameter)["Parameter"]["Value"]
            except ClientError as error:
                raise ProvisioningError(
                    f"cannot read the AMI parameter {c.ami_parameter} in {c.region}: pass --ami"
                ) from error
            source = c.ami_parameter
        images = self.ctx.ec2.describe_images(ImageIds=[ami])["Images"]
        if not images:
            raise ProvisioningError(f"AMI {ami} does not exist in {c.region}")
        self.ctx.say("ami", f"{ami} {images[0].get('Name', '')!r} (from {source})")
        return ami
