"""`raydiffusion-aws` and Ray's own AWS code against emulated AWS (moto's standalone server).

Every AWS call goes over real HTTP to moto, through boto3's standard `AWS_ENDPOINT_URL`, exactly
as it would go to AWS: our bootstrap, status and teardown, then Ray's `bootstrap_aws` and its
AWS node provider launching one node of each type from the bootstrapped cluster.yaml.

Moto cannot hold AWS's *public* SSM parameters (names under /aws/ are reserved), so the tests
publish the AMI id under a parameter name of their own and pass it with `--ami-parameter`: the
lookup code is the same one that reads the real Deep Learning AMI parameter.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from aws_relay import linux_amis
from conftest import free_port
from moto.server import ThreadedMotoServer
from support import ROOT

from serve_app.provisioning import cluster_stamp
from serve_app.provisioning.cli import main as cli_main
from serve_app.provisioning.stack import (
    DLAMI_PARAMETER,
    SECRET_KEYS,
    AwsStack,
    ProvisioningError,
    StackConfig,
)

REGION = "us-west-2"
AMI_PARAMETER = "/raydiffusion-test/dlami/ami-id"
CANARIES = {key: f"canary-{key.lower()}-7f3a9c1e55" for key in SECRET_KEYS}


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto on a loopback port, and the environment every boto3 client (Ray's too) reads."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    home = tmp_path_factory.mktemp("home")  # Ray writes the cluster's SSH key under ~/.ssh
    saved = dict(os.environ)
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        HOME=str(home),
    )
    for key in SECRET_KEYS:
        os.environ.pop(key, None)
    try:
        yield endpoint
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


@pytest.fixture(scope="module")
def dlami(aws: str) -> str:
    """An AMI in emulated EC2, published under an SSM parameter as AWS publishes the DLAMI."""
    ec2 = boto3.client("ec2", region_name=REGION)
    ami = _any_ami(ec2)  # moto's images made from an instance have no EBS root: bootstrap refuses them
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=AMI_PARAMETER, Value=ami, Type="String", Overwrite=True
    )
    return ami


def _any_ami(ec2: object) -> str:
    """A Linux x86_64 EBS-backed image of moto's catalogue: what the cluster can boot."""
    return linux_amis(ec2)[0]


def _cluster_copy(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    shutil.copy(ROOT / "cluster.yaml", path)
    return path


def _config(**overrides: object) -> StackConfig:
    values: dict = {"region": REGION, "bucket": "rd-test-bucket", "ami_parameter": AMI_PARAMETER}
    values.update(overrides)
    return StackConfig(**values)


def _run(config: StackConfig, cluster: Path, dry_run: bool = False) -> list[str]:
    lines: list[str] = []
    AwsStack(config, cluster, dry_run=dry_run, say=lines.append).bootstrap()
    return lines


def _snapshot(config: StackConfig) -> dict:
    """Everything bootstrap manages, read back from (emulated) AWS."""
    iam = boto3.client("iam", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    roles = {}
    for role in (config.head_role, config.worker_role):
        roles[role] = {
            "trust": iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"],
            "inline": iam.list_role_policies(RoleName=role)["PolicyNames"],
            "policy": iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"],
            "profile_roles": [
                r["RoleName"]
                for r in iam.get_instance_profile(InstanceProfileName=role)["InstanceProfile"]["Roles"]
            ],
        }
    (group,) = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [config.name]}])[
        "SecurityGroups"
    ]
    return {
        "roles": roles,
        "group_id": group["GroupId"],
        "rules": sorted(json.dumps(p, sort_keys=True) for p in group["IpPermissions"]),
        "buckets": sorted(b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]),
        "repos": [r["repositoryName"] for r in boto3.client("ecr").describe_repositories()["repositories"]],
        "secrets": [s["Name"] for s in boto3.client("secretsmanager").list_secrets()["SecretList"]],
        "topics": sorted(t["TopicArn"] for t in boto3.client("sns").list_topics()["Topics"]),
    }


def _serve_port_cidrs(group_id: str) -> set[str]:
    (group,) = boto3.client("ec2", region_name=REGION).describe_security_groups(GroupIds=[group_id])[
        "SecurityGroups"
    ]
    return {
        r["CidrIp"]
        for p in group["IpPermissions"]
        if p.get("IpProtocol") == "tcp" and p.get("FromPort") == 8000
        for r in p.get("IpRanges", [])
    }


# ---- bootstrap ------------------------------------------------------------------------------------


def test_bootstrap_twice_gives_the_same_resources_and_never_prints_secrets(
    aws: str, dlami: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for key, value in CANARIES.items():
        monkeypatch.setenv(key, value)
    cluster = _cluster_copy(tmp_path)
    config = _config(allow_cidr="203.0.113.0/24")
    # Through the command line, as a user runs it.
    argv = ["bootstrap", "--region", REGION, "--bucket", config.bucket, "--allow-cidr", "203.0.113.0/24"]
    argv += ["--ami-parameter", AMI_PARAMETER, "--cluster-yaml", str(cluster)]
    argv += ["--ssh-cidr", "0.0.0.0/0"]  # required now; the config the snapshot compares with
    assert cli_main(argv) == 0
    first_output = capsys.readouterr().out
    first = _snapshot(config)
    stamped = cluster.read_text()

    second_output = "\n".join(_run(config, cluster))
    assert _snapshot(config) == first
    assert cluster.read_text() == stamped
    for verb in ("create", "update", "open", "close", "write", "attach"):
        assert not any(line.startswith(verb) for line in second_output.splitlines()), second_output
    assert "create" in first_output and "iam role raydiffusion-head" in first_output

    # The secret holds the values; no output ever shows one.
    secret = json.loads(
        boto3.client("secretsmanager").get_secret_value(SecretId="raydiffusion")["SecretString"]
    )
    # The bot token is never stored where the cluster can read it; the origin header's value is
    # generated (tests/aws/test_aws_front_and_iam.py follows it into CloudFront).
    stored = {key: value for key, value in CANARIES.items() if key != "DISCORD_BOT_TOKEN"}
    assert secret == {**stored, "ORIGIN_VERIFY_SECRET": secret["ORIGIN_VERIFY_SECRET"]}
    for value in CANARIES.values():
        assert value not in first_output and value not in second_output

    # `status` reports every resource as present and created by us, and what cluster.yaml holds.
    shown: list[str] = []
    found = AwsStack(config, cluster, say=shown.append).status()
    assert len(found) == 11 and set(found.values()) == {"ours"}, found
    assert any(line.startswith("cluster.yaml") and "ami: ami-" in line for line in shown), shown

    # The bucket exists with public access blocked.
    block = boto3.client("s3").get_public_access_block(Bucket=config.bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values()), block


def test_bootstrap_writes_every_marked_value_into_cluster_yaml(aws: str, dlami: str, tmp_path: Path) -> None:
    from ray.autoscaler._private.util import validate_config

    cluster = _cluster_copy(tmp_path)
    config = _config()
    _run(config, cluster)
    text = cluster.read_text()
    assert "set-by-raydiffusion-aws-bootstrap" not in text
    loaded = yaml.safe_load(text)
    validate_config(loaded)
    group_id = _snapshot(config)["group_id"]
    account = boto3.client("sts").get_caller_identity()["Account"]
    image = f"{account}.dkr.ecr.{REGION}.amazonaws.com/raydiffusion:{config.image_tag}"
    assert loaded["provider"]["region"] == REGION
    assert loaded["docker"]["head_image"] == loaded["docker"]["worker_image"] == image
    for name, node_type in loaded["available_node_types"].items():
        node = node_type["node_config"]
        assert node["ImageId"] == dlami, name
        assert node["SecurityGroupIds"] == [group_id], name
        expected = "raydiffusion-head" if name == loaded["head_node_type"] else "raydiffusion-worker"
        assert node["IamInstanceProfile"] == {"Name": expected}, name
    env = loaded["docker"]["run_options"]
    assert f"--env=SECRETS_MANAGER_SECRET_ID={config.secret_id}" in env
    assert f"--env=RAYDIFFUSION_S3_BUCKET={config.bucket}" in env
    assert f"--env=AWS_DEFAULT_REGION={REGION}" in env
    topic = f"arn:aws:sns:{REGION}:{account}:{config.name}-alerts"
    assert f"--env=ALERTS_SNS_TOPIC_ARN={topic}" in env
    assert topic in [t["TopicArn"] for t in boto3.client("sns").list_topics()["Topics"]]
    (login,) = [c for c in loaded["initialization_commands"] if "docker login" in c]
    assert f"--region {REGION}" in login and login.endswith(image.split("/")[0])
    zones = loaded["provider"]["availability_zone"].split(",")
    assert zones and all(zone.startswith(REGION) for zone in zones)
    # Comments and knobs outside the marked lines are untouched.
    original = (ROOT / "cluster.yaml").read_text().splitlines()
    kept = [line for line in original if "raydiffusion-aws:" not in line]
    assert [line for line in text.splitlines() if "raydiffusion-aws:" not in line] == kept


def test_other_stack_names_reach_cluster_yaml(aws: str, dlami: str, tmp_path: Path) -> None:
    cluster = _cluster_copy(tmp_path)
    _run(_config(name="rd-named", bucket="rd-named-bucket", secret_id="rd-named"), cluster)
    loaded = yaml.safe_load(cluster.read_text())
    assert loaded["cluster_name"] == "rd-named"
    for name, node_type in loaded["available_node_types"].items():
        role = "rd-named-head" if name == loaded["head_node_type"] else "rd-named-worker"
        assert node_type["node_config"]["IamInstanceProfile"] == {"Name": role}


def test_dry_run_changes_nothing(aws: str, dlami: str, tmp_path: Path) -> None:
    cluster = _cluster_copy(tmp_path)
    before = cluster.read_bytes()
    config = _config(name="rd-dry", bucket="rd-dry-bucket", secret_id="rd-dry", allow_cidr="198.51.100.0/24")
    state_before = _account_state()
    output = _run(config, cluster, dry_run=True)
    assert _account_state() == state_before
    assert cluster.read_bytes() == before
    assert any("would create" in line and "iam role rd-dry-head" in line for line in output), output
    assert any("would open" in line and "198.51.100.0/24" in line for line in output), output
    assert all(line.startswith("[dry-run]") for line in output)


def _account_state() -> dict:
    iam = boto3.client("iam", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    return {
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "profiles": sorted(
            p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]
        ),
        "groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "rules": sorted(
            json.dumps(g["IpPermissions"], sort_keys=True)
            for g in ec2.describe_security_groups()["SecurityGroups"]
        ),
        "buckets": sorted(b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]),
        "repos": sorted(
            r["repositoryName"] for r in boto3.client("ecr").describe_repositories()["repositories"]
        ),
        "secrets": sorted(s["Name"] for s in boto3.client("secretsmanager").list_secrets()["SecretList"]),
        "topics": sorted(t["TopicArn"] for t in boto3.client("sns").list_topics()["Topics"]),
    }


# ---- what the policies allow ------------------------------------------------------------------------


def _allows(policy: dict, action: str, resource: str) -> bool:
    """Allow statements only (ours have no Deny); conditions are checked separately."""
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        if statement["Effect"] == "Allow" and any(fnmatch.fnmatchcase(action, a) for a in actions):
            if any(fnmatch.fnmatchcase(resource, r) for r in resources):
                return True
    return False


def test_policies_grant_pass_role_on_the_worker_role_only_and_scope_s3_by_prefix(
    aws: str, dlami: str, tmp_path: Path
) -> None:
    config = _config()
    _run(config, _cluster_copy(tmp_path))
    iam = boto3.client("iam", region_name=REGION)
    account = boto3.client("sts").get_caller_identity()["Account"]
    head = iam.get_role_policy(RoleName=config.head_role, PolicyName=config.head_role)["PolicyDocument"]
    worker = iam.get_role_policy(RoleName=config.worker_role, PolicyName=config.worker_role)["PolicyDocument"]
    worker_role_arn = iam.get_role(RoleName=config.worker_role)["Role"]["Arn"]

    pass_role = [s for s in head["Statement"] if "iam:PassRole" in json.dumps(s["Action"])]
    assert len(pass_role) == 1 and pass_role[0]["Resource"] == worker_role_arn
    assert not any(
        a.startswith("iam:") for s in head["Statement"] for a in _actions(s) if a != "iam:PassRole"
    )
    assert not _allows(head, "iam:PassRole", f"arn:aws:iam::{account}:role/{config.head_role}")
    assert not _allows(head, "iam:PassRole", f"arn:aws:iam::{account}:role/admin")
    # The head launches and stops only this cluster's instances; it reads exactly one secret.
    (stop,) = [s for s in head["Statement"] if "ec2:TerminateInstances" in _actions(s)]
    assert stop["Condition"] == {"StringEquals": {"ec2:ResourceTag/ray-cluster-name": config.name}}
    secret_arn = boto3.client("secretsmanager").describe_secret(SecretId=config.secret_id)["ARN"]
    assert _allows(head, "secretsmanager:GetSecretValue", secret_arn)
    assert not _allows(head, "secretsmanager:GetSecretValue", secret_arn.replace(config.secret_id, "other"))

    topic = f"arn:aws:sns:{REGION}:{account}:{config.name}-alerts"
    assert _allows(head, "sns:Publish", topic)
    assert not _allows(head, "sns:Publish", topic.replace("-alerts", "-other"))
    bucket = f"arn:aws:s3:::{config.bucket}"
    assert _allows(worker, "s3:GetObject", f"{bucket}/weights/sd15/unet/model.safetensors")
    assert not _allows(worker, "s3:PutObject", f"{bucket}/weights/sd15/unet/model.safetensors")
    assert _allows(worker, "s3:PutObject", f"{bucket}/raydiffusion/images/img_1.png")
    assert _allows(worker, "s3:GetObject", f"{bucket}/raydiffusion/predictions/pred_1.json")
    assert not _allows(worker, "s3:GetObject", f"{bucket}/elsewhere/file")
    assert not _allows(worker, "s3:GetObject", "arn:aws:s3:::another-bucket/weights/x")
    assert not any(
        a.split(":")[0] in {"iam", "secretsmanager"} for s in worker["Statement"] for a in _actions(s)
    )
    # Its one EC2 action: a worker whose head is gone stops the cluster's workers, never the head.
    (ec2_statement,) = [s for s in worker["Statement"] if any(a.startswith("ec2:") for a in _actions(s))]
    assert _actions(ec2_statement) == ["ec2:TerminateInstances"]
    assert ec2_statement["Condition"] == {
        "StringEquals": {
            "ec2:ResourceTag/ray-cluster-name": config.name,
            "ec2:ResourceTag/ray-node-kind": "worker",
        }
    }
    # Unconditioned on purpose: S3 answers 404 (not 403) for a missing key only to a caller whose
    # ListBucket applies to the request, and an s3:prefix condition never applies to a GetObject.
    for document in (worker, head):
        (listing,) = [s for s in document["Statement"] if "s3:ListBucket" in _actions(s)]
        assert listing["Resource"] == bucket and "Condition" not in listing


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def test_serve_port_is_open_only_to_the_given_cidr(aws: str, dlami: str, tmp_path: Path) -> None:
    cluster = _cluster_copy(tmp_path)
    config = _config(name="rd-ports", bucket="rd-ports-bucket", secret_id="rd-ports")
    _run(config, cluster)
    group_id = _snapshot(config)["group_id"]
    assert _serve_port_cidrs(group_id) == set(), "nobody by default"

    _run(
        _config(name="rd-ports", bucket="rd-ports-bucket", secret_id="rd-ports", allow_cidr="203.0.113.7/32"),
        cluster,
    )
    assert _serve_port_cidrs(group_id) == {"203.0.113.7/32"}

    output = _run(
        _config(
            name="rd-ports", bucket="rd-ports-bucket", secret_id="rd-ports", allow_cidr="198.51.100.0/24"
        ),
        cluster,
    )
    assert _serve_port_cidrs(group_id) == {"198.51.100.0/24"}
    assert any(line.startswith("close") and "203.0.113.7/32" in line for line in output), output
    (group,) = boto3.client("ec2", region_name=REGION).describe_security_groups(GroupIds=[group_id])[
        "SecurityGroups"
    ]
    ports = {p.get("FromPort") for p in group["IpPermissions"] if p.get("IpProtocol") == "tcp"}
    assert ports == {22, 8000}
    assert any(
        p.get("IpProtocol") == "-1" and p["UserIdGroupPairs"][0]["GroupId"] == group_id
        for p in group["IpPermissions"]
    ), "Ray's nodes must reach each other"


# ---- teardown ------------------------------------------------------------------------------------


def test_teardown_removes_only_what_bootstrap_tagged(aws: str, dlami: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    iam = boto3.client("iam", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    # The user's own bucket, reused by bootstrap, and look-alikes bootstrap never made.
    s3.create_bucket(Bucket="users-own-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="users-own-bucket", Key="weights/model.safetensors", Body=b"weights")
    iam.create_role(RoleName="rd-down-other", AssumeRolePolicyDocument="{}")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    decoy_group = ec2.create_security_group(GroupName="rd-down-decoy", Description="not ours", VpcId=vpc)[
        "GroupId"
    ]

    config = _config(name="rd-down", bucket="users-own-bucket", secret_id="rd-down")
    _run(config, _cluster_copy(tmp_path))
    owned_bucket = _config(name="rd-down2", bucket="rd-down2-bucket", secret_id="rd-down2")
    _run(owned_bucket, _cluster_copy(tmp_path))
    s3.put_object(Bucket="rd-down2-bucket", Key="raydiffusion/images/img.png", Body=b"png")

    lines: list[str] = []
    deleted = AwsStack(config, tmp_path / "cluster.yaml", say=lines.append).teardown()
    # The distribution and the address are named by id: compare their kind.
    kinds = [
        " ".join(d.split()[:2]) if d.startswith(("cloudfront", "elastic")) else d.split(" (")[0]
        for d in deleted
    ]
    assert sorted(kinds) == sorted(
        [
            "cloudfront distribution",
            "elastic ip",
            "security group rd-down",
            "iam instance profile rd-down-head",
            "iam role rd-down-head",
            "iam instance profile rd-down-worker",
            "iam role rd-down-worker",
            "secret rd-down",
            "ecr repository rd-down and its images",
            "sns topic rd-down-alerts",
        ]
    )
    state = _account_state()
    assert "users-own-bucket" in state["buckets"]
    assert (
        s3.get_object(Bucket="users-own-bucket", Key="weights/model.safetensors")["Body"].read() == b"weights"
    )
    assert "rd-down-other" in state["roles"] and decoy_group in state["groups"]
    assert not {"rd-down-head", "rd-down-worker"} & set(state["roles"])
    assert not {"rd-down-head", "rd-down-worker"} & set(state["profiles"])
    assert "rd-down" not in state["repos"]
    assert "rd-down2-head" in state["roles"], "another stack's resources stay"

    # A bucket bootstrap created is deleted only when empty or when asked to empty it.
    stack = AwsStack(owned_bucket, tmp_path / "cluster.yaml", say=lines.append)
    stack.teardown()
    assert "rd-down2-bucket" in _account_state()["buckets"]
    assert any(line.startswith("kept") and "rd-down2-bucket" in line for line in lines)
    stack.teardown(empty_bucket=True)
    assert "rd-down2-bucket" not in _account_state()["buckets"]
    assert AwsStack(owned_bucket, tmp_path / "cluster.yaml", say=lines.append).teardown() == []
    assert set(AwsStack(owned_bucket, tmp_path / "cluster.yaml", say=lines.append).status().values()) == {
        "missing"
    }

    # Bootstrap after a teardown brings the stack back (the secret is restored, not recreated).
    _run(config, _cluster_copy(tmp_path))
    assert {"rd-down-head", "rd-down-worker"} <= set(_account_state()["roles"])
    assert "DeletedDate" not in boto3.client("secretsmanager").describe_secret(SecretId="rd-down")


def test_an_unreadable_ami_parameter_stops_bootstrap_before_anything_is_created(
    aws: str, dlami: str, tmp_path: Path
) -> None:
    before = _account_state()
    config = _config(
        name="rd-noami", bucket="rd-noami-bucket", secret_id="rd-noami", ami_parameter="/nope/ami"
    )
    with pytest.raises(ProvisioningError, match="pass --ami"):
        _run(config, _cluster_copy(tmp_path))
    assert _account_state() == before


def test_a_role_bootstrap_did_not_create_is_never_taken_over(aws: str, dlami: str, tmp_path: Path) -> None:
    boto3.client("iam", region_name=REGION).create_role(
        RoleName="rd-taken-worker", AssumeRolePolicyDocument="{}"
    )
    with pytest.raises(ProvisioningError, match="not created by raydiffusion-aws"):
        _run(
            _config(name="rd-taken", bucket="rd-taken-bucket", secret_id="rd-taken"), _cluster_copy(tmp_path)
        )
    assert (
        boto3.client("iam", region_name=REGION).list_role_policies(RoleName="rd-taken-worker")["PolicyNames"]
        == []
    )


# ---- Ray's own AWS code on the result ---------------------------------------------------------------


def test_rays_bootstrap_and_node_provider_launch_each_node_type_as_configured(
    aws: str, dlami: str, tmp_path: Path
) -> None:
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.util import prepare_config
    from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME, TAG_RAY_NODE_KIND, TAG_RAY_USER_NODE_TYPE

    cluster = _cluster_copy(tmp_path)
    config = _config(allow_cidr="203.0.113.0/24")
    _run(config, cluster)
    group_id = _snapshot(config)["group_id"]
    roles_before = _account_state()["roles"]

    ready = bootstrap_aws(prepare_config(yaml.safe_load(cluster.read_text())))
    # Ray used our head profile and group: it created no role of its own and changed no rule.
    assert _account_state()["roles"] == roles_before
    assert "ray-autoscaler-v1" not in roles_before
    assert _serve_port_cidrs(group_id) == {"203.0.113.0/24"}

    provider = AWSNodeProvider(ready["provider"], ready["cluster_name"])
    ec2 = boto3.client("ec2", region_name=REGION)
    account = boto3.client("sts").get_caller_identity()["Account"]
    for node_type, spec in ready["available_node_types"].items():
        head = node_type == ready["head_node_type"]
        node_config = {**spec["node_config"], **(ready["head_node"] if head else {})}
        tags = {
            TAG_RAY_CLUSTER_NAME: ready["cluster_name"],
            TAG_RAY_NODE_KIND: "head" if head else "worker",
            TAG_RAY_USER_NODE_TYPE: node_type,
        }
        provider.create_node(node_config, tags, 1)
        (instance,) = [
            i
            for r in ec2.describe_instances(
                Filters=[
                    {"Name": f"tag:{TAG_RAY_USER_NODE_TYPE}", "Values": [node_type]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]},
                ]
            )["Reservations"]
            for i in r["Instances"]
        ]
        assert instance["ImageId"] == dlami, node_type
        assert instance["InstanceType"] == spec["node_config"]["InstanceType"]
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group_id], node_type
        profile = "raydiffusion-head" if head else "raydiffusion-worker"
        assert instance["IamInstanceProfile"]["Arn"] == f"arn:aws:iam::{account}:instance-profile/{profile}"
        instance_tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert instance_tags[TAG_RAY_CLUSTER_NAME] == config.name == ready["cluster_name"]
        assert instance_tags[TAG_RAY_USER_NODE_TYPE] == node_type
        assert instance["Placement"]["AvailabilityZone"] in ready["provider"]["availability_zone"].split(",")
        spot = spec["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
        assert (instance.get("InstanceLifecycle") == "spot") == spot, (
            node_type,
            instance.get("InstanceLifecycle"),
        )
    # Every type of cluster.yaml was launched above (head, spot, on-demand, any other GPU class).
    assert set(ready["available_node_types"]) == set(
        yaml.safe_load(cluster.read_text())["available_node_types"]
    )
    assert {"head", "gpu_spot", "gpu_ondemand"} <= set(ready["available_node_types"])
    # Teardown refuses while the cluster's instances still use the group.
    with pytest.raises(ProvisioningError, match="ray down"):
        AwsStack(config, cluster, say=lambda _line: None).teardown()


# ---- pure logic -------------------------------------------------------------------------------------


def test_the_default_ami_is_awss_current_gpu_deep_learning_base_ami_parameter() -> None:
    assert DLAMI_PARAMETER.startswith("/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-")
    assert DLAMI_PARAMETER.endswith("/latest/ami-id")


def test_stamping_rewrites_only_marked_values() -> None:
    text = 'a: 1  # keep\nb: "x"  # raydiffusion-aws: b\nlist:\n  - "y"  # raydiffusion-aws: item\n'
    out = cluster_stamp.stamp_text(text, {"b": "p | q: r", "item": ["s", "t"]})
    assert yaml.safe_load(out) == {"a": 1, "b": "p | q: r", "list": [["s", "t"]]}
    assert out.splitlines()[0] == "a: 1  # keep"
    with pytest.raises(cluster_stamp.StampError, match="missing_key"):
        cluster_stamp.stamp_text(text, {"missing_key": 1})


def test_committed_cluster_yaml_cannot_launch_before_bootstrap() -> None:
    """Unbootstrapped values are impossible ids, never something that would launch wrongly."""
    values = cluster_stamp.current_values((ROOT / "cluster.yaml").read_text())
    assert set(values) >= {"region", "availability_zone", "ami", "security_group_ids", "image", "ecr_login"}
    node_types = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
    assert values["ami"] == ["ami-set-by-raydiffusion-aws-bootstrap"] * len(node_types)
    assert all("set-by-raydiffusion-aws-bootstrap" in str(v) for v in values["image"])
