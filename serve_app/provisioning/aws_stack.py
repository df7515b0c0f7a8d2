"""The AWS resources a `ray up cluster.yaml` needs, created idempotently with boto3.

Ray's own AWS bootstrap would otherwise create a head role with EC2 and S3 *full* access and no
`iam:PassRole` (so workers with an instance profile cannot launch), pick a 2021 CUDA 11.2 AMI, and
open only SSH. Everything here is tagged ``raydiffusion:stack=<name>`` so `teardown` deletes exactly
what `bootstrap` created and nothing that merely shares a name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.exceptions import ClientError

from serve_app.provisioning import cluster_stamp

# AWS publishes the current x86_64 GPU Deep Learning Base AMI (NVIDIA driver, Docker and the NVIDIA
# container toolkit preinstalled: what Ray's Docker mode needs) under this public SSM parameter.
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
# Only these keys are ever put into the secret, and only their names are ever printed.
SECRET_KEYS = ("DISCORD_PUBLIC_KEY", "DISCORD_APPLICATION_ID", "DISCORD_BOT_TOKEN", "RAYDIFFUSION_API_KEYS")
STACK_TAG = "raydiffusion:stack"
MANAGED_BY = ("managed-by", "raydiffusion-aws")
SERVE_PORT = 8000


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
        }


def render_policy(name: str, **values: str) -> dict[str, Any]:
    """A policy document from serve_app/provisioning/policies/, its ${Placeholders} filled in."""
    text = resources.files("serve_app.provisioning").joinpath("policies", f"{name}.json").read_text()
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    if "${" in text:
        raise ProvisioningError(f"policy {name}: unfilled placeholder in {text[text.index('${') :][:40]}")
    return json.loads(text)


class AwsStack:
    def __init__(
        self,
        config: StackConfig,
        cluster_yaml: Path,
        dry_run: bool = False,
        say: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.cluster_yaml = cluster_yaml
        self.dry_run = dry_run
        self._print = say
        # boto3 honours AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>): that is how the tests
        # point every call at moto's server without a code path of their own.
        session = boto3.Session(region_name=config.region)
        self.s3 = session.client("s3")
        self.iam = session.client("iam")
        self.ec2 = session.client("ec2")
        self.ssm = session.client("ssm")
        self.secrets = session.client("secretsmanager")
        self.ecr = session.client("ecr")
        self.sts = session.client("sts")
        self.sns = session.client("sns")

    # ---- output ---------------------------------------------------------------------------------
    def _say(self, action: str, what: str) -> None:
        if self.dry_run and action in {"create", "update", "delete", "write", "open", "close", "restore"}:
            action = f"would {action}"
        self._print(f"{'[dry-run] ' if self.dry_run else ''}{action:<14} {what}")

    @property
    def _tags(self) -> list[dict[str, str]]:
        return [{"Key": STACK_TAG, "Value": self.config.name}, {"Key": MANAGED_BY[0], "Value": MANAGED_BY[1]}]

    def _is_ours(self, tags: list[dict[str, str]] | None) -> bool:
        return {"Key": STACK_TAG, "Value": self.config.name} in [
            {"Key": t.get("Key"), "Value": t.get("Value")} for t in (tags or [])
        ]

    # ---- bootstrap ------------------------------------------------------------------------------
    def bootstrap(self) -> Resolved:
        c = self.config
        identity = self.sts.get_caller_identity()
        resolved = Resolved(account=identity["Account"], partition=identity["Arn"].split(":")[1])
        self._say("account", f"{resolved.account} in {c.region}")
        # First, because it is the step most likely to fail (a region without the parameter, a
        # mistyped --ami): nothing is created before we know the nodes can boot.
        resolved.ami = self._resolve_ami()
        self._ensure_bucket()
        self._ensure_repository(resolved)
        self._ensure_secret(resolved)
        self._ensure_alerts_topic(resolved)
        arn = f"arn:{resolved.partition}:iam::{resolved.account}"
        common = {
            "Partition": resolved.partition,
            "Region": c.region,
            "AccountId": resolved.account,
            "Bucket": c.bucket,
            "WeightsPrefix": c.weights_prefix,
            "StorePrefix": c.store_prefix,
            "RepositoryArn": resolved.repository_arn,
        }
        self._ensure_role(c.worker_role, render_policy("worker", **common))
        self._ensure_instance_profile(c.worker_role)
        head_policy = render_policy(
            "head",
            **common,
            ClusterName=c.name,
            WorkerRoleArn=f"{arn}:role/{c.worker_role}",
            SecretArnPattern=resolved.secret_arn_pattern,
            AlertsTopicArn=resolved.alerts_topic_arn,
        )
        self._ensure_role(c.head_role, head_policy)
        self._ensure_instance_profile(c.head_role)
        self._ensure_security_group(resolved)
        self._write_cluster_yaml(resolved)
        return resolved

    def _ensure_bucket(self) -> None:
        bucket = self.config.bucket
        try:
            self.s3.head_bucket(Bucket=bucket)
            exists = True
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in {"403", "AccessDenied"}:
                raise ProvisioningError(f"bucket {bucket} exists but belongs to another account") from error
            exists = False
        if exists:
            self._say(
                "exists",
                f"s3 bucket {bucket}{'' if self._bucket_is_ours() else ' (yours: kept on teardown)'}",
            )
        else:
            self._say("create", f"s3 bucket {bucket}")
            if not self.dry_run:
                kwargs: dict[str, Any] = {"Bucket": bucket}
                if self.config.region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.config.region}
                self.s3.create_bucket(**kwargs)
                self.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": self._tags})
        self._say("ensure", f"s3 bucket {bucket}: all public access blocked")
        if not self.dry_run:
            self.s3.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
        self._say(
            "prefixes",
            f"s3://{bucket}/{self.config.weights_prefix} (weights, read-only to nodes), "
            f"s3://{bucket}/{self.config.store_prefix} (images/ and job records)",
        )

    def _bucket_is_ours(self) -> bool:
        try:
            tags = self.s3.get_bucket_tagging(Bucket=self.config.bucket)["TagSet"]
        except ClientError:
            return False
        return self._is_ours(tags)

    def _ensure_repository(self, resolved: Resolved) -> None:
        name = self.config.name
        try:
            repo = self.ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
            self._say("exists", f"ecr repository {name}")
        except ClientError as error:
            if error.response["Error"]["Code"] != "RepositoryNotFoundException":
                raise
            self._say("create", f"ecr repository {name} (immutable tags, scan on push)")
            if self.dry_run:
                registry = f"{resolved.account}.dkr.ecr.{self.config.region}.amazonaws.com"
                resolved.repository_arn = (
                    f"arn:{resolved.partition}:ecr:{self.config.region}:{resolved.account}:repository/{name}"
                )
                resolved.repository_uri = f"{registry}/{name}"
                return
            # Immutable tags: a tag names one image forever, so nodes launched on different days
            # from the same cluster.yaml run the same code.
            repo = self.ecr.create_repository(
                repositoryName=name,
                imageTagMutability="IMMUTABLE",
                imageScanningConfiguration={"scanOnPush": True},
                tags=self._tags,
            )["repository"]
        resolved.repository_arn = repo["repositoryArn"]
        resolved.repository_uri = repo["repositoryUri"]

    def _ensure_secret(self, resolved: Resolved) -> None:
        c = self.config
        if c.secret_id.startswith("arn:"):
            resolved.secret_arn_pattern = c.secret_id
        else:
            # Secrets Manager appends 6 random characters to a secret's ARN.
            prefix = f"arn:{resolved.partition}:secretsmanager:{c.region}:{resolved.account}:secret"
            resolved.secret_arn_pattern = f"{prefix}:{c.secret_id}-??????"
        values = {key: os.environ[key] for key in SECRET_KEYS if os.environ.get(key)}
        try:
            described = self.secrets.describe_secret(SecretId=c.secret_id)
            exists = True
            if described.get("DeletedDate"):  # torn down within the last 7 days: bring it back
                self._say("restore", f"secret {c.secret_id} (was scheduled for deletion)")
                if self.dry_run:
                    return
                self.secrets.restore_secret(SecretId=c.secret_id)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            exists = False
        names = ", ".join(sorted(values)) or "no keys yet (set them and run bootstrap again)"
        if not exists:
            # Created even when empty, so the id the containers are given always resolves.
            self._say("create", f"secret {c.secret_id}: {names}")
            if not self.dry_run:
                self.secrets.create_secret(Name=c.secret_id, SecretString=json.dumps(values), Tags=self._tags)
            return
        current = json.loads(self.secrets.get_secret_value(SecretId=c.secret_id).get("SecretString") or "{}")
        merged = {**current, **values}
        if merged == current:
            self._say("exists", f"secret {c.secret_id}: {', '.join(sorted(current)) or 'empty'}")
            return
        changed = sorted(key for key in values if current.get(key) != values[key])
        self._say("update", f"secret {c.secret_id}: {', '.join(changed)}")
        if not self.dry_run:
            self.secrets.put_secret_value(SecretId=c.secret_id, SecretString=json.dumps(merged))

    @property
    def _alerts_topic(self) -> str:
        return f"{self.config.name}-alerts"

    def _alerts_topic_arn(self) -> str:
        identity = self.sts.get_caller_identity()
        partition = identity["Arn"].split(":")[1]
        return f"arn:{partition}:sns:{self.config.region}:{identity['Account']}:{self._alerts_topic}"

    def _topic_tags(self, arn: str) -> list[dict[str, str]] | None:
        """The topic's tags, or None when it does not exist."""
        try:
            return self.sns.list_tags_for_resource(ResourceArn=arn)["Tags"]
        except ClientError:
            return None

    def _ensure_alerts_topic(self, resolved: Resolved) -> None:
        """The SNS topic failure alerts go to (a failed job, an undeliverable Discord message).

        Subscribe an email or a chat webhook to it yourself: subscriptions need a confirmation
        only the owner of the address can give.
        """
        name = self._alerts_topic
        resolved.alerts_topic_arn = (
            f"arn:{resolved.partition}:sns:{self.config.region}:{resolved.account}:{name}"
        )
        tags = self._topic_tags(resolved.alerts_topic_arn)
        if tags is not None:
            if not self._is_ours(tags):
                raise ProvisioningError(f"sns topic {name} exists and was not created by raydiffusion-aws")
            self._say("exists", f"sns topic {name} (failure alerts)")
            return
        self._say("create", f"sns topic {name} (failure alerts; subscribe to it yourself)")
        if not self.dry_run:
            resolved.alerts_topic_arn = self.sns.create_topic(Name=name, Tags=self._tags)["TopicArn"]

    def _ensure_role(self, name: str, policy: dict[str, Any]) -> None:
        try:
            role = self.iam.get_role(RoleName=name)["Role"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "NoSuchEntity":
                raise
            role = None
        if role is None:
            self._say("create", f"iam role {name}")
            if not self.dry_run:
                self.iam.create_role(
                    RoleName=name,
                    AssumeRolePolicyDocument=json.dumps(render_policy("ec2_trust")),
                    Description="raydiffusion Ray node role (raydiffusion-aws)",
                    Tags=self._tags,
                )
        else:
            tags = self.iam.list_role_tags(RoleName=name)["Tags"]
            if not self._is_ours(tags):
                raise ProvisioningError(
                    f"iam role {name} exists and was not created by raydiffusion-aws: "
                    "pass --name to use other names"
                )
            self._say("exists", f"iam role {name}")
        current = None
        if role is not None:
            try:
                current = self.iam.get_role_policy(RoleName=name, PolicyName=name)["PolicyDocument"]
            except ClientError:
                current = None
            if isinstance(current, str):
                current = json.loads(current)
        if current == policy:
            self._say("unchanged", f"iam policy {name}")
            return
        self._say("create" if current is None else "update", f"iam policy {name} (inline on role {name})")
        if not self.dry_run:
            self.iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))

    def _ensure_instance_profile(self, name: str) -> None:
        try:
            profile = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
            self._say("exists", f"iam instance profile {name}")
        except ClientError as error:
            if error.response["Error"]["Code"] != "NoSuchEntity":
                raise
            self._say("create", f"iam instance profile {name}")
            if self.dry_run:
                return
            profile = self.iam.create_instance_profile(InstanceProfileName=name, Tags=self._tags)[
                "InstanceProfile"
            ]
        if name not in [role["RoleName"] for role in profile.get("Roles", [])]:
            self._say("attach", f"role {name} to instance profile {name}")
            if not self.dry_run:
                self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)

    def _vpc_id(self) -> str:
        if self.config.vpc_id:
            return self.config.vpc_id
        vpcs = self.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise ProvisioningError(f"no default VPC in {self.config.region}: pass --vpc-id")
        return vpcs[0]["VpcId"]

    def _find_security_group(self, vpc_id: str) -> dict[str, Any] | None:
        groups = self.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [self.config.name]},
            ]
        )["SecurityGroups"]
        return groups[0] if groups else None

    def _ensure_security_group(self, resolved: Resolved) -> None:
        c = self.config
        vpc_id = self._vpc_id()
        resolved.availability_zones = self._usable_zones(vpc_id)
        self._say(
            "zones",
            f"{','.join(resolved.availability_zones)} (public subnets of {vpc_id} offering the GPU type)",
        )
        group = self._find_security_group(vpc_id)
        if group is None:
            self._say("create", f"security group {c.name} in {vpc_id}")
            if self.dry_run:
                self._say("open", f"tcp/22 from {c.ssh_cidr}; all traffic within the group")
                if c.allow_cidr:
                    self._say("open", f"tcp/{SERVE_PORT} from {c.allow_cidr}")
                return
            group_id = self.ec2.create_security_group(
                GroupName=c.name,
                Description="raydiffusion Ray cluster (raydiffusion-aws)",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": self._tags}],
            )["GroupId"]
            group = self.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        elif not self._is_ours(group.get("Tags")):
            raise ProvisioningError(
                f"security group {c.name} in {vpc_id} was not created by raydiffusion-aws"
            )
        else:
            self._say("exists", f"security group {c.name} ({group['GroupId']})")
        resolved.security_group_id = group["GroupId"]
        self._reconcile_rules(group)

    def _reconcile_rules(self, group: dict[str, Any]) -> None:
        """Exactly: all traffic within the group (Ray), SSH from --ssh-cidr, 8000 from --allow-cidr.

        Ray adds its own rules only to a group with none, so this group carries everything Ray
        would have added; the serve port is open to nobody unless --allow-cidr names someone.
        """
        c = self.config
        group_id = group["GroupId"]
        wanted_cidrs = {22: {c.ssh_cidr}, SERVE_PORT: {c.allow_cidr} if c.allow_cidr else set()}
        has_self_rule = False
        current: dict[int, set[str]] = {22: set(), SERVE_PORT: set()}
        for permission in group.get("IpPermissions", []):
            if permission.get("IpProtocol") == "-1" and any(
                pair.get("GroupId") == group_id for pair in permission.get("UserIdGroupPairs", [])
            ):
                has_self_rule = True
            port = permission.get("FromPort")
            if permission.get("IpProtocol") == "tcp" and port in current and permission.get("ToPort") == port:
                current[port] |= {r["CidrIp"] for r in permission.get("IpRanges", [])}
        if not has_self_rule:
            self._say("open", "all traffic within the group (Ray's nodes talk to each other)")
            if not self.dry_run:
                self.ec2.authorize_security_group_ingress(
                    GroupId=group_id,
                    IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}],
                )
        for port, wanted in wanted_cidrs.items():
            for cidr in sorted(wanted - current[port]):
                self._say("open", f"tcp/{port} from {cidr}")
                if not self.dry_run:
                    self.ec2.authorize_security_group_ingress(
                        GroupId=group_id, IpPermissions=[_tcp(port, cidr)]
                    )
            for cidr in sorted(current[port] - wanted):
                self._say("close", f"tcp/{port} from {cidr}")
                if not self.dry_run:
                    self.ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[_tcp(port, cidr)])
            if wanted and wanted == current[port]:
                self._say("unchanged", f"tcp/{port} from {', '.join(sorted(wanted))}")
        if not wanted_cidrs[SERVE_PORT]:
            self._say("note", f"tcp/{SERVE_PORT} is open to nobody (pass --allow-cidr to expose the API)")

    def _usable_zones(self, vpc_id: str) -> list[str]:
        subnets = self.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
        # Ray launches into public subnets only (unless use_internal_ips).
        zones = {
            s["AvailabilityZone"]
            for s in subnets
            if s.get("MapPublicIpOnLaunch") and s["State"] == "available"
        }
        for instance_type in self._worker_instance_types():
            offered = self.ec2.describe_instance_type_offerings(
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [instance_type]}],
            )["InstanceTypeOfferings"]
            zones &= {o["Location"] for o in offered}
        if not zones:
            raise ProvisioningError(
                f"no public subnet of {vpc_id} is in a zone offering "
                f"{', '.join(self._worker_instance_types())}"
            )
        return sorted(zones)

    def _worker_instance_types(self) -> list[str]:
        cluster = yaml.safe_load(self.cluster_yaml.read_text())
        head = cluster["head_node_type"]
        return sorted(
            {
                t["node_config"]["InstanceType"]
                for name, t in cluster["available_node_types"].items()
                if name != head
            }
        )

    def _resolve_ami(self) -> str:
        c = self.config
        if c.ami:
            ami, source = c.ami, "--ami"
        else:
            try:
                ami = self.ssm.get_parameter(Name=c.ami_parameter)["Parameter"]["Value"]
            except ClientError as error:
                raise ProvisioningError(
                    f"cannot read the AMI parameter {c.ami_parameter} in {c.region}: pass --ami"
                ) from error
            source = c.ami_parameter
        images = self.ec2.describe_images(ImageIds=[ami])["Images"]
        if not images:
            raise ProvisioningError(f"AMI {ami} does not exist in {c.region}")
        self._say("ami", f"{ami} {images[0].get('Name', '')!r} (from {source})")
        return ami

    def _write_cluster_yaml(self, resolved: Resolved) -> None:
        if resolved.security_group_id is None:  # a dry run before the group exists
            self._say("write", f"{self.cluster_yaml}: region, zones, AMI, security group, image, secret id")
            return
        changed = cluster_stamp.stamp_file(
            self.cluster_yaml, resolved.stamp_values(self.config), dry_run=self.dry_run
        )
        if changed:
            self._say("write", f"{self.cluster_yaml}: {', '.join(changed)}")
        else:
            self._say("unchanged", str(self.cluster_yaml))

    # ---- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, str]:
        """What exists now: resource -> 'ours' | 'not ours' | 'missing'."""
        c = self.config
        found: dict[str, str] = {}

        def mark(what: str, state: str) -> None:
            found[what] = state
            self._say(state, what)

        try:
            self.s3.head_bucket(Bucket=c.bucket)
            mark(f"s3 bucket {c.bucket}", "ours" if self._bucket_is_ours() else "not ours")
        except ClientError:
            mark(f"s3 bucket {c.bucket}", "missing")
        try:
            repo = self.ecr.describe_repositories(repositoryNames=[c.name])["repositories"][0]
            tags = self.ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
            mark(f"ecr repository {c.name}", "ours" if self._is_ours(tags) else "not ours")
        except ClientError:
            mark(f"ecr repository {c.name}", "missing")
        try:
            secret = self.secrets.describe_secret(SecretId=c.secret_id)
            if secret.get("DeletedDate"):
                mark(f"secret {c.secret_id} (scheduled for deletion)", "missing")
            else:
                mark(f"secret {c.secret_id}", "ours" if self._is_ours(secret.get("Tags")) else "not ours")
        except ClientError:
            mark(f"secret {c.secret_id}", "missing")
        topic_arn = self._alerts_topic_arn()
        tags = self._topic_tags(topic_arn)
        if tags is None:
            mark(f"sns topic {self._alerts_topic}", "missing")
        else:
            mark(f"sns topic {self._alerts_topic}", "ours" if self._is_ours(tags) else "not ours")
        for name in (c.worker_role, c.head_role):
            try:
                self.iam.get_role(RoleName=name)
                tags = self.iam.list_role_tags(RoleName=name)["Tags"]
                mark(f"iam role {name}", "ours" if self._is_ours(tags) else "not ours")
            except ClientError:
                mark(f"iam role {name}", "missing")
            try:
                profile = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
                mark(
                    f"iam instance profile {name}",
                    "ours" if self._is_ours(profile.get("Tags")) else "not ours",
                )
            except ClientError:
                mark(f"iam instance profile {name}", "missing")
        try:
            group = self._find_security_group(self._vpc_id())
        except ProvisioningError:
            group = None
        if group is None:
            mark(f"security group {c.name}", "missing")
        else:
            mark(
                f"security group {c.name} ({group['GroupId']})",
                "ours" if self._is_ours(group.get("Tags")) else "not ours",
            )
        values = cluster_stamp.current_values(self.cluster_yaml.read_text())
        for key in ("region", "ami", "security_group_ids", "image"):
            self._say("cluster.yaml", f"{key}: {values.get(key, ['(no marker)'])[0]}")
        return found

    # ---- teardown -------------------------------------------------------------------------------
    def teardown(self, empty_bucket: bool = False) -> list[str]:
        """Delete what bootstrap tagged, in dependency order; returns what was (or would be) deleted."""
        c = self.config
        deleted: list[str] = []

        def delete(what: str, action: Callable[[], Any]) -> None:
            self._say("delete", what)
            deleted.append(what)
            if not self.dry_run:
                action()

        try:
            vpc_id = self._vpc_id()
            group = self._find_security_group(vpc_id)
        except ProvisioningError:
            group = None
        if group is not None and self._is_ours(group.get("Tags")):
            running = self.ec2.describe_instances(
                Filters=[
                    {"Name": "instance.group-id", "Values": [group["GroupId"]]},
                    {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
                ]
            )["Reservations"]
            if running:
                raise ProvisioningError(
                    f"instances still use security group {group['GroupId']}: "
                    "run `ray down cluster.yaml` first"
                )
            delete(
                f"security group {c.name} ({group['GroupId']})",
                lambda: self.ec2.delete_security_group(GroupId=group["GroupId"]),
            )
        for name in (c.head_role, c.worker_role):
            try:
                profile = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
            except ClientError:
                profile = None
            if profile is not None and self._is_ours(profile.get("Tags")):

                def drop_profile(profile: dict[str, Any] = profile, name: str = name) -> None:
                    for role in profile.get("Roles", []):
                        self.iam.remove_role_from_instance_profile(
                            InstanceProfileName=name, RoleName=role["RoleName"]
                        )
                    self.iam.delete_instance_profile(InstanceProfileName=name)

                delete(f"iam instance profile {name}", drop_profile)
            try:
                self.iam.get_role(RoleName=name)
                tags = self.iam.list_role_tags(RoleName=name)["Tags"]
            except ClientError:
                tags = None
            if tags is not None and self._is_ours(tags):

                def drop_role(name: str = name) -> None:
                    for policy in self.iam.list_role_policies(RoleName=name)["PolicyNames"]:
                        self.iam.delete_role_policy(RoleName=name, PolicyName=policy)
                    for attached in self.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
                        self.iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
                    for profile in self.iam.list_instance_profiles_for_role(RoleName=name)[
                        "InstanceProfiles"
                    ]:
                        self.iam.remove_role_from_instance_profile(
                            InstanceProfileName=profile["InstanceProfileName"], RoleName=name
                        )
                    self.iam.delete_role(RoleName=name)

                delete(f"iam role {name}", drop_role)
        try:
            secret = self.secrets.describe_secret(SecretId=c.secret_id)
            # A secret already scheduled for deletion is gone as far as teardown is concerned.
            tags = None if secret.get("DeletedDate") else secret.get("Tags", [])
        except ClientError:
            tags = None
        if tags is not None and self._is_ours(tags):
            # Recoverable for 7 days (Secrets Manager's shortest window): a mistaken teardown
            # does not lose the Discord credentials.
            delete(
                f"secret {c.secret_id} (recoverable for 7 days)",
                lambda: self.secrets.delete_secret(SecretId=c.secret_id, RecoveryWindowInDays=7),
            )
        topic_arn = self._alerts_topic_arn()
        tags = self._topic_tags(topic_arn)
        if tags is not None and self._is_ours(tags):
            delete(f"sns topic {self._alerts_topic}", lambda: self.sns.delete_topic(TopicArn=topic_arn))
        try:
            repo = self.ecr.describe_repositories(repositoryNames=[c.name])["repositories"][0]
            tags = self.ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
        except ClientError:
            tags = None
        if tags is not None and self._is_ours(tags):
            delete(
                f"ecr repository {c.name} and its images",
                lambda: self.ecr.delete_repository(repositoryName=c.name, force=True),
            )
        if self._bucket_is_ours():
            keys = self._bucket_keys()
            if keys and not empty_bucket:
                self._say(
                    "kept",
                    f"s3 bucket {c.bucket}: it holds {len(keys)} objects (weights, images): "
                    "pass --empty-bucket to delete them and the bucket",
                )
            else:

                def drop_bucket() -> None:
                    for start in range(0, len(keys), 1000):
                        self.s3.delete_objects(
                            Bucket=c.bucket,
                            Delete={"Objects": [{"Key": key} for key in keys[start : start + 1000]]},
                        )
                    self.s3.delete_bucket(Bucket=c.bucket)

                delete(f"s3 bucket {c.bucket} ({len(keys)} objects)", drop_bucket)
        if not deleted:
            self._say("nothing", f"tagged {STACK_TAG}={c.name} in {c.region}")
        return deleted

    def _bucket_keys(self) -> list[str]:
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys


def _tcp(port: int, cidr: str) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}
