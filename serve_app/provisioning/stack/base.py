"""What every resource family of the stack shares: the config, the resolved ids, the clients, the tags.

Everything bootstrap creates is tagged ``raydiffusion:stack=<name>`` so `teardown` deletes exactly
what `bootstrap` created and nothing that merely shares a name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import boto3

# AWS publishes the current x86_64 GPU Deep Learning Base AMI (NVIDIA driver, Docker and the NVIDIA
# container toolkit preinstalled: what Ray's Docker mode needs) under this public SSM parameter.
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
# Only these keys are ever put into the secret, and only their names are ever printed.
SECRET_KEYS = ("DISCORD_PUBLIC_KEY", "DISCORD_APPLICATION_ID", "DISCORD_BOT_TOKEN", "RAYDIFFUSION_API_KEYS")
STACK_TAG = "raydiffusion:stack"
MANAGED_BY = ("managed-by", "raydiffusion-aws")
SERVE_PORT = 8000
# The header CloudFront adds to every request it forwards, and the secret key holding its value:
# the ingress refuses requests without it, so the head's port cannot be used to bypass the front.
ORIGIN_HEADER = "X-Raydiffusion-Origin"
ORIGIN_SECRET_KEY = "ORIGIN_VERIFY_SECRET"
# AWS's managed prefix list of CloudFront's origin-facing addresses: port 8000 admits exactly these.
CLOUDFRONT_PREFIX_LIST = "com.amazonaws.global.cloudfront.origin-facing"


class ProvisioningError(Exception):
    """A step cannot go on safely (a name owned by someone else, no default VPC, no AMI)."""


def project_version() -> str:
    try:
        return version("raydiffusion")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.0.0"


@dataclass(frozen=True)
class StackConfig:
    region: str
    bucket: str
    secret_id: str = "raydiffusion"
    allow_cidr: str | None = None
    ssh_cidr: str = "0.0.0.0/0"
    ami: str | None = None
    ami_parameter: str = DLAMI_PARAMETER
    # Keep the AMI cluster.yaml already holds (a new one changes the head's launch hash, and
    # `ray up` then replaces the head) unless asked: --refresh-ami.
    refresh_ami: bool = False
    vpc_id: str | None = None
    # Also the cluster_name in cluster.yaml: the head may stop only instances Ray tagged with it.
    name: str = "raydiffusion"
    weights_prefix: str = "weights/"
    store_prefix: str = "raydiffusion/"  # the image store's s3_prefix: images/ and job records
    image_tag: str = field(default_factory=project_version)

    @property
    def head_role(self) -> str:
        return f"{self.name}-head"

    @property
    def worker_role(self) -> str:
        return f"{self.name}-worker"


@dataclass
class Resolved:
    """Ids bootstrap found or made; what it stamps into cluster.yaml."""

    account: str = ""
    partition: str = "aws"
    secret_arn_pattern: str = ""
    repository_arn: str = ""
    repository_uri: str = ""
    alerts_topic_arn: str = ""
    security_group_id: str | None = None
    availability_zones: list[str] = field(default_factory=list)
    ami: str = ""
    address_allocation_id: str = ""  # the head's Elastic IP
    address_dns: str = ""  # its public DNS name: CloudFront's origin
    origin_secret: str = field(default="", repr=False)
    https_url: str = ""  # https://dXXXX.cloudfront.net

    def stamp_values(self, config: StackConfig) -> dict[str, Any]:
        registry = self.repository_uri.split("/", 1)[0]
        return {
            "cluster_name": config.name,
            "head_profile": {"Name": config.head_role},
            "worker_profile": {"Name": config.worker_role},
            "region": config.region,
            "availability_zone": ",".join(self.availability_zones),
            "ami": self.ami,
            "security_group_ids": [self.security_group_id],
            "image": f"{self.repository_uri}:{config.image_tag}",
            "ecr_login": (
                f"aws ecr get-login-password --region {config.region} | "
                f"docker login --username AWS --password-stdin {registry}"
            ),
            "env_region": f"--env=AWS_DEFAULT_REGION={config.region}",
            "env_secret": f"--env=SECRETS_MANAGER_SECRET_ID={config.secret_id}",
            "env_bucket": f"--env=RAYDIFFUSION_S3_BUCKET={config.bucket}",
            "env_bucket_region": f"--env=RAYDIFFUSION_S3_REGION={config.region}",
            "env_alerts": f"--env=ALERTS_SNS_TOPIC_ARN={self.alerts_topic_arn}",
            "env_origin": f"--env=RAYDIFFUSION_ORIGIN_HEADER={ORIGIN_HEADER}",
            "head_address": (
                "nohup python -m serve_app.provisioning.head_address "
                f"--region {config.region} --allocation-id {self.address_allocation_id} "
                f"--cluster-name {config.name} "
                ">/tmp/raydiffusion-head-address.log 2>&1 &"
            ),
        }


def render_policy(name: str, **values: str | list[str]) -> dict[str, Any]:
    """A policy document from serve_app/provisioning/policies/, its ${Placeholders} filled in.

    A list value replaces its quoted placeholder (``"${InstanceTypes}"``) with a JSON list.
    """
    text = resources.files("serve_app.provisioning").joinpath("policies", f"{name}.json").read_text()
    for key, value in values.items():
        if isinstance(value, list):
            text = text.replace('"${' + key + '}"', json.dumps(value))
        else:
            text = text.replace("${" + key + "}", value)
    if "${" in text:
        raise ProvisioningError(f"policy {name}: unfilled placeholder in {text[text.index('${') :][:40]}")
    return json.loads(text)


class Context:
    """The clients, the dry-run switch and the printing every family shares.

    boto3 honours AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>): that is how the tests point
    every call at moto's server without a code path of their own.
    """

    def __init__(self, config: StackConfig, dry_run: bool, say: Callable[[str], None]) -> None:
        self.config = config
        self.dry_run = dry_run
        self._print = say
        session = boto3.Session(region_name=config.region)
        self.s3 = session.client("s3")
        self.iam = session.client("iam")
        self.ec2 = session.client("ec2")
        self.ssm = session.client("ssm")
        self.secrets = session.client("secretsmanager")
        self.ecr = session.client("ecr")
        self.sts = session.client("sts")
        self.sns = session.client("sns")
        self.cloudfront = session.client("cloudfront")
        self.cloudwatch = session.client("cloudwatch")

    def say(self, action: str, what: str) -> None:
        if self.dry_run and action in {"create", "update", "delete", "write", "open", "close", "restore"}:
            action = f"would {action}"
        self._print(f"{'[dry-run] ' if self.dry_run else ''}{action:<14} {what}")

    @property
    def tags(self) -> list[dict[str, str]]:
        return [{"Key": STACK_TAG, "Value": self.config.name}, {"Key": MANAGED_BY[0], "Value": MANAGED_BY[1]}]

    def is_ours(self, tags: list[dict[str, str]] | None) -> bool:
        return {"Key": STACK_TAG, "Value": self.config.name} in [
            {"Key": t.get("Key"), "Value": t.get("Value")} for t in (tags or [])
        ]


# status marks a resource "ours" | "not ours" | "missing"; teardown deletes through one callback
# that prints, records and (unless a dry run) acts.
Mark = Callable[[str, str], None]
Delete = Callable[[str, Callable[[], Any]], None]


class Family:
    """One family of AWS resources: how bootstrap makes it, status reads it, teardown removes it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.config = ctx.config

    def status(self, mark: Mark) -> None:
        """Mark each resource of the family."""

    def teardown(self, delete: Delete) -> None:
        """Delete what bootstrap tagged."""
