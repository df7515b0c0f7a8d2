"""The AWS path as a real account evaluates it: IAM conditions, a spot launch that fails, the HTTPS front.

Every call goes over HTTP to moto's standalone server through ``aws_relay.AwsRelay``, which
authorises requests signed with the head's or the worker's key against the policy documents
bootstrap put on those roles (AWS's condition rules, ``policy_eval``), answers a missing S3 key
with 403 where AWS would, and refuses spot RunInstances with ``InsufficientInstanceCapacity``.
Moto alone does none of that, so none of these tests could fail against it the way AWS fails.
No Ray is started: Ray's autoscaler v2 node-provider adapter and AWS provider run in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from aws_relay import AwsRelay, linux_amis
from botocore.exceptions import ClientError
from conftest import free_port
from moto.server import ThreadedMotoServer
from support import ROOT

from serve_app.engine.model.s3_sync import sync_s3_model
from serve_app.provisioning.cli import main as cli_main
from serve_app.provisioning.stack import AwsStack, StackConfig
from serve_app.provisioning.stack.base import ORIGIN_HEADER, ORIGIN_SECRET_KEY, SERVE_PORT, STACK_TAG
from serve_app.provisioning.stack.cdn import ALL_VIEWER_EXCEPT_HOST_HEADER, CACHING_DISABLED
from serve_app.storage.s3 import S3ImageStore

REGION = "us-west-2"
AMI_PARAMETER = "/raydiffusion-test/front/ami-id"
HEAD_KEY, WORKER_KEY = "AKIAHEADROLE0000TEST", "AKIAWORKERROLE00TEST"


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsRelay]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    front = AwsRelay(f"http://127.0.0.1:{port}").start()
    saved = dict(os.environ)
    os.environ.update(
        AWS_ENDPOINT_URL=front.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        HOME=str(tmp_path_factory.mktemp("home")),
    )
    for key in ("DISCORD_PUBLIC_KEY", "DISCORD_APPLICATION_ID", "DISCORD_BOT_TOKEN", "RAYDIFFUSION_API_KEYS"):
        os.environ.pop(key, None)
    _forget_endpoints()
    try:
        yield front
    finally:
        # Ray caches boto3 clients (with this endpoint) per process: modules after this one must
        # not inherit them. moto's backends are process-wide too (tests/conftest.py's SharedAWS):
        # this module keeps to its own names (rdfront) and its last test tears them down.
        _forget_endpoints()
        os.environ.clear()
        os.environ.update(saved)
        front.stop()
        server.stop()


def _forget_endpoints() -> None:
    from ray.autoscaler._private.aws.utils import client_cache, resource_cache
    from ray.autoscaler._private.providers import _clear_provider_cache

    client_cache.cache_clear()
    resource_cache.cache_clear()
    _clear_provider_cache()
    boto3.DEFAULT_SESSION = None


@pytest.fixture(scope="module")
def stack(relay: AwsRelay, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One bootstrapped stack (as an admin would run it), with the roles' documents mapped to keys."""
    ec2 = boto3.client("ec2", region_name=REGION)
    ami = linux_amis(ec2)[0]  # Linux, x86_64, an EBS root: what bootstrap accepts
    boto3.client("ssm", region_name=REGION).put_parameter(Name=AMI_PARAMETER, Value=ami, Type="String")
    cluster = tmp_path_factory.mktemp("front") / "cluster.yaml"
    shutil.copy(ROOT / "cluster.yaml", cluster)
    config = StackConfig(
        region=REGION,
        bucket="rd-front-bucket",
        ami_parameter=AMI_PARAMETER,
        name="rdfront",
        secret_id="rdfront",
    )
    os.environ["DISCORD_BOT_TOKEN"] = "bot-token-canary-5b1d"
    lines: list[str] = []
    try:
        resolved = AwsStack(config, cluster, say=lines.append).bootstrap()
    finally:
        os.environ.pop("DISCORD_BOT_TOKEN")
    iam = boto3.client("iam")
    documents = {
        role: iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"]
        for role in (config.head_role, config.worker_role)
    }
    documents = {role: json.loads(d) if isinstance(d, str) else d for role, d in documents.items()}
    relay.policies[HEAD_KEY] = [documents[config.head_role]]
    relay.policies[WORKER_KEY] = [documents[config.worker_role]]
    return {
        "config": config,
        "cluster": cluster,
        "resolved": resolved,
        "lines": lines,
        "documents": documents,
    }


def ours(distributions: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """This stack's distributions: moto's backends are process-wide, so other modules' stacks
    (tests/aws/test_aws_provisioning.py bootstraps its own) may hold distributions too."""
    return [d for d in distributions if d.get("Comment", "").startswith(f"{STACK_TAG}={name}:")]


@pytest.fixture
def as_role(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def use(key: str) -> None:
        """Sign as ``key`` from now on: boto3's default session caches the credentials it first read."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        boto3.DEFAULT_SESSION = None

    yield use
    boto3.DEFAULT_SESSION = None


# ---- the HTTPS front --------------------------------------------------------------------------------


def test_bootstrap_puts_cloudfront_over_the_heads_elastic_ip_with_the_secret_origin_header(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config, resolved = stack["config"], stack["resolved"]
    ec2 = boto3.client("ec2", region_name=REGION)
    (address,) = ec2.describe_addresses(AllocationIds=[resolved.address_allocation_id])["Addresses"]
    assert (
        resolved.address_dns == f"ec2-{address['PublicIp'].replace('.', '-')}.{REGION}.compute.amazonaws.com"
    )

    cf = boto3.client("cloudfront")
    (summary,) = ours(cf.list_distributions()["DistributionList"].get("Items", []), config.name)
    distribution = cf.get_distribution_config(Id=summary["Id"])["DistributionConfig"]
    (origin,) = distribution["Origins"]["Items"]
    assert origin["DomainName"] == resolved.address_dns  # a name, never an IP: CloudFront's rule
    assert origin["CustomOriginConfig"]["HTTPPort"] == SERVE_PORT
    assert origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "http-only"
    secret = json.loads(
        boto3.client("secretsmanager").get_secret_value(SecretId=config.secret_id)["SecretString"]
    )
    headers = {h["HeaderName"]: h["HeaderValue"] for h in origin["CustomHeaders"]["Items"]}
    assert headers == {ORIGIN_HEADER: secret[ORIGIN_SECRET_KEY]} and len(secret[ORIGIN_SECRET_KEY]) >= 32
    behaviour = distribution["DefaultCacheBehavior"]
    assert behaviour["ViewerProtocolPolicy"] == "https-only"
    assert set(behaviour["AllowedMethods"]["Items"]) == {
        "GET",
        "HEAD",
        "OPTIONS",
        "PUT",
        "POST",
        "PATCH",
        "DELETE",
    }
    assert behaviour["CachePolicyId"] == CACHING_DISABLED
    assert behaviour["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST_HEADER  # Discord's signature headers

    # Port 8000 admits CloudFront's origin-facing prefix list (and no CIDR: none was given).
    (group,) = ec2.describe_security_groups(GroupIds=[resolved.security_group_id])["SecurityGroups"]
    serve_rules = [p for p in group["IpPermissions"] if p.get("FromPort") == SERVE_PORT]
    (prefix_list,) = ec2.describe_managed_prefix_lists(
        Filters=[{"Name": "prefix-list-name", "Values": ["com.amazonaws.global.cloudfront.origin-facing"]}]
    )["PrefixLists"]
    assert [pl["PrefixListId"] for p in serve_rules for pl in p.get("PrefixListIds", [])] == [
        prefix_list["PrefixListId"]
    ]
    assert [r for p in serve_rules for r in p.get("IpRanges", [])] == []

    # The head takes the address at boot: cluster.yaml's last head command names this allocation.
    head_commands = yaml.safe_load(stack["cluster"].read_text())["head_start_ray_commands"]
    assert f"--allocation-id {resolved.address_allocation_id}" in head_commands[-1]
    assert "serve_app.provisioning.head_address" in head_commands[-1]

    # The bot token stays on the user's machine; the spot service-linked role exists.
    assert "DISCORD_BOT_TOKEN" not in secret
    assert not any("bot-token-canary" in line for line in stack["lines"])
    assert boto3.client("iam").list_roles(PathPrefix="/aws-service-role/spot.amazonaws.com/")["Roles"]

    # `raydiffusion-aws status` prints the URL to paste into Discord's developer portal.
    args = ["--region", REGION, "--bucket", config.bucket, "--name", config.name, "--cluster-yaml"]
    assert cli_main(["status", *args, str(stack["cluster"])]) == 0
    url = f"https://{summary['DomainName']}/discord/interactions"
    # What the README's `awk '$1 == "discord" {print $2}'` takes from it.
    taken = [
        line.split()[1] for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["discord"]
    ]
    assert taken == [url]

    # Bootstrapping again keeps the address and the distribution (the URL Discord knows).
    lines: list[str] = []
    again = AwsStack(config, stack["cluster"], say=lines.append).bootstrap()
    assert (again.address_allocation_id, again.https_url) == (
        resolved.address_allocation_id,
        f"https://{summary['DomainName']}",
    )
    assert not [line for line in lines if line.startswith(("create", "update"))], lines


def test_a_bot_token_an_older_bootstrap_stored_is_removed(stack: dict[str, Any]) -> None:
    config = stack["config"]
    sm = boto3.client("secretsmanager")
    current = json.loads(sm.get_secret_value(SecretId=config.secret_id)["SecretString"])
    sm.put_secret_value(
        SecretId=config.secret_id, SecretString=json.dumps({**current, "DISCORD_BOT_TOKEN": "old"})
    )
    AwsStack(config, stack["cluster"], say=lambda _line: None).bootstrap()
    after = json.loads(sm.get_secret_value(SecretId=config.secret_id)["SecretString"])
    assert after == current  # the token gone, the origin secret unchanged (CloudFront still sends it)


# ---- S3 as AWS evaluates the roles ----------------------------------------------------------------


def test_a_missing_key_is_404_for_both_roles_and_each_role_reaches_only_its_prefixes(
    stack: dict[str, Any], relay: AwsRelay, as_role: Any, tmp_path: Path
) -> None:
    config = stack["config"]
    admin = boto3.client("s3")
    for name in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"):
        admin.put_object(Bucket=config.bucket, Key=f"weights/tiny/{name}", Body=b"{}")
    for key in (HEAD_KEY, WORKER_KEY):
        as_role(key)
        relay.denied.clear()
        store = S3ImageStore(config.bucket, prefix="raydiffusion", region=REGION)
        # The reads every job and every /imagine makes: a cancel marker, a user's /settings.
        assert store.get_json("jobs/cancel/absent.json") is None
        assert store.get_json("settings/discord/123.json") is None
        store.put_json("jobs/j1.json", {"ok": True})
        assert store.get_json("jobs/j1.json") == {"ok": True}
        store.delete("jobs/j1.json")
        assert relay.denied == []
        with pytest.raises(ClientError, match="AccessDenied"):  # weights are read-only to nodes
            boto3.client("s3").put_object(Bucket=config.bucket, Key="weights/tiny/evil.json", Body=b"x")
    as_role(WORKER_KEY)
    report = sync_s3_model(f"s3://{config.bucket}/weights/tiny", tmp_path, relay.url)
    assert report.downloaded == 3


def test_the_relay_gives_the_403_aws_gives_a_list_permission_limited_by_prefix(
    stack: dict[str, Any], relay: AwsRelay, as_role: Any
) -> None:
    """The earlier policy (ListBucket only under an s3:prefix condition) fails here as on AWS."""
    worker = json.loads(json.dumps(stack["documents"][stack["config"].worker_role]))
    for statement in worker["Statement"]:
        if statement["Action"] == "s3:ListBucket":
            statement["Condition"] = {"StringLike": {"s3:prefix": ["weights/*", "raydiffusion/*"]}}
    relay.policies["AKIAOLDWORKERPOLICY0"] = [worker]
    as_role("AKIAOLDWORKERPOLICY0")
    store = S3ImageStore(stack["config"].bucket, prefix="raydiffusion", region=REGION)
    with pytest.raises(ClientError, match="AccessDenied"):
        store.get_json("jobs/cancel/absent.json")


# ---- Ray's autoscaler meets a spot launch that fails ------------------------------------------------


def _bootstrapped_ray_config(stack: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """What `ray up` hands the head (Ray's own bootstrap of our provider type), as a file."""
    from ray.autoscaler._private.commands import _bootstrap_config

    ready = _bootstrap_config(yaml.safe_load(stack["cluster"].read_text()), no_config_cache=True)
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(ready))
    return ready, path


def _launch(provider: Any, config_path: Path, node_type: str) -> tuple[dict[str, Any], list[Any]]:
    """Ray's autoscaler v2 adapter launches one node; returns the new workers and the errors it saw."""
    from ray.autoscaler.v2.instance_manager.config import FileConfigReader
    from ray.autoscaler.v2.instance_manager.node_provider import NodeProviderAdapter

    adapter = NodeProviderAdapter(provider, FileConfigReader(str(config_path)))
    before = set(adapter.get_non_terminated())
    adapter.launch({node_type: 1}, request_id=f"test-{time.monotonic_ns()}")
    errors: list[Any] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        errors += adapter.poll_errors()
        new = {k: v for k, v in adapter.get_non_terminated().items() if k not in before}
        if new or errors:
            return new, errors
        time.sleep(0.2)  # polling the adapter's launch thread, with a deadline
    raise AssertionError("the adapter neither launched nor reported an error in 60 s")


def test_a_spot_launch_without_capacity_falls_back_to_on_demand_under_the_heads_policy(
    stack: dict[str, Any], relay: AwsRelay, as_role: Any, tmp_path: Path
) -> None:
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.providers import _get_node_provider
    from ray.autoscaler.v2.instance_manager.node_provider import LaunchNodeError

    from serve_app.provisioning.node_provider import MARKET_TAG, SpotFallbackNodeProvider

    ready, config_path = _bootstrapped_ray_config(stack, tmp_path)
    assert ready["provider"]["type"] == "external"
    as_role(HEAD_KEY)  # the autoscaler runs on the head, with the head's role
    relay.fail_spot = True
    relay.denied.clear()
    try:
        # Ray's own provider: the error reaches the autoscaler, which would keep choosing spot.
        plain = AWSNodeProvider(ready["provider"], ready["cluster_name"])
        launched, errors = _launch(plain, config_path, "gpu_spot")
        assert launched == {} and errors and isinstance(errors[0], LaunchNodeError)
        refusals = relay.spot_refusals
        assert refusals >= 1

        provider = _get_node_provider(ready["provider"], ready["cluster_name"], use_cache=False)
        assert isinstance(provider, SpotFallbackNodeProvider)
        launched, errors = _launch(provider, config_path, "gpu_spot")
        assert errors == [] and len(launched) == 1
        assert relay.spot_refusals > refusals  # spot was tried first, and refused
        (instance_id,) = launched
        assert launched[instance_id].node_type == "gpu_spot"
    finally:
        relay.fail_spot = False
    as_role("testing")
    instance = boto3.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"
    ][0]
    assert instance.get("InstanceLifecycle") != "spot"
    assert instance["InstanceType"] == "g5.xlarge"
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags[MARKET_TAG] == "on-demand" and tags["ray-cluster-name"] == stack["config"].name
    assert relay.denied == []  # RunInstances, PassRole and tags at launch: all within the head's policy

    # The head re-tags and terminates its own nodes (Ray does), and nothing else.
    as_role(HEAD_KEY)
    provider.set_node_tags(instance_id, {"ray-node-status": "up-to-date"})
    assert relay.denied == []
    as_role("testing")
    ec2 = boto3.client("ec2")
    foreign = ec2.run_instances(
        ImageId=stack["resolved"].ami, MinCount=1, MaxCount=1, InstanceType="m5.large"
    )
    foreign_id = foreign["Instances"][0]["InstanceId"]
    as_role(HEAD_KEY)
    head_ec2 = boto3.client("ec2")
    with pytest.raises(ClientError, match="UnauthorizedOperation"):  # tag it as ours, then terminate it
        head_ec2.create_tags(Resources=[foreign_id], Tags=[{"Key": "ray-cluster-name", "Value": "rdfront"}])
    with pytest.raises(ClientError, match="UnauthorizedOperation"):
        head_ec2.terminate_instances(InstanceIds=[foreign_id])
    with pytest.raises(ClientError, match="UnauthorizedOperation"):  # not one of the cluster's types
        head_ec2.run_instances(
            ImageId=stack["resolved"].ami, MinCount=1, MaxCount=1, InstanceType="p4d.24xlarge"
        )
    provider.terminate_node(instance_id)
    as_role("testing")
    ec2.terminate_instances(InstanceIds=[foreign_id])


# ---- the head's loss: workers stop themselves, the alerts topic hears of it ---------------------------


def test_a_worker_may_terminate_the_clusters_workers_but_never_the_head(
    stack: dict[str, Any], as_role: Any
) -> None:
    as_role("testing")
    ec2 = boto3.client("ec2")
    ids = {}
    for kind in ("worker", "head"):
        tags = [
            {"Key": "ray-cluster-name", "Value": stack["config"].name},
            {"Key": "ray-node-kind", "Value": kind},
        ]
        ids[kind] = ec2.run_instances(
            ImageId=stack["resolved"].ami,
            MinCount=1,
            MaxCount=1,
            InstanceType="g5.xlarge",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"][0]["InstanceId"]
    as_role(WORKER_KEY)  # what node_watchdog does on a worker whose head is gone
    worker_ec2 = boto3.client("ec2")
    with pytest.raises(ClientError, match="UnauthorizedOperation"):
        worker_ec2.terminate_instances(InstanceIds=[ids["head"]])
    worker_ec2.terminate_instances(InstanceIds=[ids["worker"]])
    as_role("testing")
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances(InstanceIds=list(ids.values()))["Reservations"]
        for i in r["Instances"]
    }
    assert states[ids["worker"]] in {"shutting-down", "terminated"} and states[ids["head"]] == "running"
    ec2.terminate_instances(InstanceIds=[ids["head"]])


def test_the_head_takes_the_clusters_address_and_cannot_give_it_to_another_instance(
    stack: dict[str, Any], as_role: Any
) -> None:
    from serve_app.provisioning.head_address import associate

    as_role("testing")
    ec2 = boto3.client("ec2")
    ids = {}
    for owner in ("rdfront", "someone-else"):
        ids[owner] = ec2.run_instances(
            ImageId=stack["resolved"].ami,
            MinCount=1,
            MaxCount=1,
            InstanceType="m5.xlarge",
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "ray-cluster-name", "Value": owner}]}
            ],
        )["Instances"][0]["InstanceId"]
    allocation = stack["resolved"].address_allocation_id
    as_role(HEAD_KEY)  # what head_address does at boot, with the head's role
    head_ec2 = boto3.client("ec2")
    assert "associated with" in associate(head_ec2, allocation, ids["rdfront"])
    assert "already on" in associate(head_ec2, allocation, ids["rdfront"])
    with pytest.raises(ClientError, match="UnauthorizedOperation"):
        associate(head_ec2, allocation, ids["someone-else"])
    as_role("testing")
    ec2.disassociate_address(
        AssociationId=ec2.describe_addresses(AllocationIds=[allocation])["Addresses"][0]["AssociationId"]
    )
    ec2.terminate_instances(InstanceIds=list(ids.values()))


def test_the_head_alarms_on_its_own_loss_and_nothing_else(stack: dict[str, Any], as_role: Any) -> None:
    from serve_app.provisioning.head_address import alarm_on_loss

    config, topic = stack["config"], stack["resolved"].alerts_topic_arn
    as_role(HEAD_KEY)
    cloudwatch = boto3.client("cloudwatch")
    name = alarm_on_loss(cloudwatch, config.name, "i-0123456789abcdef0", topic)
    with pytest.raises(ClientError, match="AccessDenied"):  # only its own cluster's alarm
        alarm_on_loss(cloudwatch, "someone-else", "i-0123456789abcdef0", topic)
    as_role("testing")
    (alarm,) = boto3.client("cloudwatch").describe_alarms(AlarmNames=[name])["MetricAlarms"]
    assert alarm["AlarmActions"] == [topic] and alarm["TreatMissingData"] == "breaching"
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": "i-0123456789abcdef0"}]


# ---- upgrades keep the head ------------------------------------------------------------------------


def test_bootstrap_keeps_the_ami_cluster_yaml_holds_unless_asked_to_refresh(stack: dict[str, Any]) -> None:
    """A newer AMI would change the head's launch hash, and `ray up` would replace the head."""
    config, cluster = stack["config"], stack["cluster"]
    ec2 = boto3.client("ec2", region_name=REGION)
    chosen = yaml.safe_load(cluster.read_text())["available_node_types"]["head"]["node_config"]["ImageId"]
    newer = next(ami for ami in linux_amis(ec2) if ami != chosen)  # "the parameter's next release"
    boto3.client("ssm", region_name=REGION).put_parameter(
        Name=AMI_PARAMETER, Value=newer, Type="String", Overwrite=True
    )

    def head_ami() -> str:
        return yaml.safe_load(cluster.read_text())["available_node_types"]["head"]["node_config"]["ImageId"]

    AwsStack(config, cluster, say=lambda _line: None).bootstrap()
    assert head_ami() == chosen
    refreshed = StackConfig(**{**config.__dict__, "refresh_ami": True})
    AwsStack(refreshed, cluster, say=lambda _line: None).bootstrap()
    assert head_ami() == newer


# ---- teardown -----------------------------------------------------------------------------------------


def test_teardown_removes_the_distribution_and_the_address(stack: dict[str, Any], as_role: Any) -> None:
    as_role("testing")
    ec2 = boto3.client("ec2")
    leftover = [
        i["InstanceId"]
        for r in ec2.describe_instances(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        )["Reservations"]
        for i in r["Instances"]
    ]
    if leftover:
        ec2.terminate_instances(InstanceIds=leftover)
    lines: list[str] = []
    deleted = AwsStack(stack["config"], stack["cluster"], say=lines.append).teardown(empty_bucket=True)
    assert any(d.startswith("cloudfront distribution") for d in deleted), lines
    assert any(d.startswith("elastic ip") for d in deleted), lines
    assert f"cloudwatch alarm {stack['config'].name}-head-lost" in deleted, lines
    left = boto3.client("cloudfront").list_distributions()["DistributionList"].get("Items", [])
    assert ours(left, stack["config"].name) == []
    assert (
        ec2.describe_addresses(Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [stack["config"].name]}])[
            "Addresses"
        ]
        == []
    )
    found = AwsStack(stack["config"], stack["cluster"], say=lambda _line: None).status()
    assert set(found.values()) == {"missing"}
