"""The AWS resources a `ray up cluster.yaml` needs, created idempotently with boto3, one module per family.

Ray's own AWS bootstrap would otherwise create a head role with EC2 and S3 *full* access and no
`iam:PassRole` (so workers with an instance profile cannot launch), pick a 2021 CUDA 11.2 AMI, and
open only SSH. Each family (images, storage, registry, secrets, messaging, iam, network) knows how
bootstrap makes it, how status reads it and how teardown removes it; `AwsStack` runs them in order.
The front door (cdn: CloudFront over the head's Elastic IP) is what gives Discord its HTTPS URL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from serve_app.provisioning import cluster_stamp
from serve_app.provisioning.stack.base import (
    DLAMI_PARAMETER,
    SECRET_KEYS,
    SERVE_PORT,
    STACK_TAG,
    Context,
    ProvisioningError,
    Resolved,
    StackConfig,
    render_policy,
)
from serve_app.provisioning.stack.cdn import Distribution
from serve_app.provisioning.stack.iam import NodeRoles
from serve_app.provisioning.stack.images import MachineImage
from serve_app.provisioning.stack.messaging import AlertsTopic
from serve_app.provisioning.stack.network import Network
from serve_app.provisioning.stack.registry import Repository
from serve_app.provisioning.stack.secrets import ServiceSecret
from serve_app.provisioning.stack.storage import Bucket

__all__ = [
    "DLAMI_PARAMETER",
    "SECRET_KEYS",
    "SERVE_PORT",
    "STACK_TAG",
    "AwsStack",
    "ProvisioningError",
    "Resolved",
    "StackConfig",
    "render_policy",
]


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
        self.ctx = Context(config, dry_run, say)
        self.image = MachineImage(self.ctx)
        self.bucket = Bucket(self.ctx)
        self.repository = Repository(self.ctx)
        self.secret = ServiceSecret(self.ctx)
        self.alerts = AlertsTopic(self.ctx)
        self.roles = NodeRoles(self.ctx)
        self.network = Network(self.ctx, cluster_yaml)
        self.front = Distribution(self.ctx)

    # ---- bootstrap ------------------------------------------------------------------------------
    def bootstrap(self) -> Resolved:
        c = self.config
        identity = self.ctx.sts.get_caller_identity()
        resolved = Resolved(account=identity["Account"], partition=identity["Arn"].split(":")[1])
        self.ctx.say("account", f"{resolved.account} in {c.region}")
        # First, because it is the step most likely to fail (a region without the parameter, a
        # mistyped --ami): nothing is created before we know the nodes can boot.
        stamped = cluster_stamp.current_values(self.cluster_yaml.read_text()).get("ami", [None])[0]
        resolved.ami = self.image.resolve(stamped)
        self.bucket.ensure()
        self.repository.ensure(resolved)
        self.secret.ensure(resolved)
        self.alerts.ensure(resolved)
        # The group and the address come before the roles: the head's policy names them.
        self.network.ensure(resolved)
        self.network.ensure_address(resolved)
        if self._uses_spot():
            self.roles.ensure_spot_role()
        self.roles.ensure(resolved, self.network.worker_instance_types())
        self.front.ensure(resolved)
        self._write_cluster_yaml(resolved)
        if resolved.https_url:
            self.ctx.say(
                "discord", f"{resolved.https_url}/discord/interactions  (the Interactions Endpoint URL)"
            )
        return resolved

    def _uses_spot(self) -> bool:
        cluster = yaml.safe_load(self.cluster_yaml.read_text())
        return any(
            (t.get("node_config", {}).get("InstanceMarketOptions") or {}).get("MarketType") == "spot"
            for t in cluster["available_node_types"].values()
        )

    def _write_cluster_yaml(self, resolved: Resolved) -> None:
        if resolved.security_group_id is None:  # a dry run before the group exists
            self.ctx.say(
                "write", f"{self.cluster_yaml}: region, zones, AMI, security group, image, secret id"
            )
            return
        changed = cluster_stamp.stamp_file(
            self.cluster_yaml, resolved.stamp_values(self.config), dry_run=self.dry_run
        )
        if changed:
            self.ctx.say("write", f"{self.cluster_yaml}: {', '.join(changed)}")
        else:
            self.ctx.say("unchanged", str(self.cluster_yaml))

    # ---- status ---------------------------------------------------------------------------------
    def status(self) -> dict[str, str]:
        """What exists now: resource -> 'ours' | 'not ours' | 'missing'."""
        found: dict[str, str] = {}

        def mark(what: str, state: str) -> None:
            found[what] = state
            self.ctx.say(state, what)

        self.bucket.status(mark)
        self.repository.status(mark)
        self.secret.status(mark)
        self.alerts.status(mark)
        self.roles.status(mark)
        self.network.status(mark)
        self.network.status_address(mark)
        self.front.status(mark)
        values = cluster_stamp.current_values(self.cluster_yaml.read_text())
        for key in ("region", "ami", "security_group_ids", "image"):
            self.ctx.say("cluster.yaml", f"{key}: {values.get(key, ['(no marker)'])[0]}")
        url = self.front.interactions_url()
        self.ctx.say("discord", url or "no HTTPS front yet: run bootstrap")
        return found

    # ---- teardown -------------------------------------------------------------------------------
    def teardown(self, empty_bucket: bool = False) -> list[str]:
        """Delete what bootstrap tagged, in dependency order; returns what was (or would be) deleted."""
        deleted: list[str] = []

        def delete(what: str, action: Callable[[], Any]) -> None:
            self.ctx.say("delete", what)
            deleted.append(what)
            if not self.dry_run:
                action()

        # Nothing goes while a node is up; then the front (it points at the address), the address,
        # the group.
        self.network.refuse_while_in_use()
        self.front.teardown(delete)
        self.network.teardown_address(delete)
        self.network.teardown(delete)
        self.roles.teardown(delete)
        self.secret.teardown(delete)
        self.alerts.teardown(delete)
        self.repository.teardown(delete)
        self.bucket.teardown_bucket(delete, empty_bucket)
        if not deleted:
            self.ctx.say("nothing", f"tagged {STACK_TAG}={self.config.name} in {self.config.region}")
        return deleted
