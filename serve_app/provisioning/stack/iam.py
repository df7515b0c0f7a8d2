"""The head's and the workers' roles and instance profiles, their policies from policies/*.json."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from serve_app.provisioning.stack.base import Delete, Family, Mark, ProvisioningError, Resolved, render_policy

# EC2 launches spot instances through this service-linked role; a fresh account does not have it
# until something creates it, and then every spot RunInstances fails.
SPOT_SERVICE = "spot.amazonaws.com"


class NodeRoles(Family):
    def ensure_spot_role(self) -> None:
        """Create AWSServiceRoleForEC2Spot if the account lacks it (account-wide: never deleted)."""
        ctx = self.ctx
        roles = ctx.iam.list_roles(PathPrefix=f"/aws-service-role/{SPOT_SERVICE}/")["Roles"]
        if roles:
            ctx.say("exists", f"iam service-linked role {roles[0]['RoleName']} (spot launches)")
            return
        ctx.say(
            "create", "iam service-linked role AWSServiceRoleForEC2Spot (spot launches; account-wide, kept)"
        )
        if not ctx.dry_run:
            ctx.iam.create_service_linked_role(AWSServiceName=SPOT_SERVICE)

    def ensure(self, resolved: Resolved, worker_instance_types: list[str]) -> None:
        c = self.config
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
        self._ensure_role(c.worker_role, render_policy("worker", **common, ClusterName=c.name))
        self._ensure_instance_profile(c.worker_role)
        head_policy = render_policy(
            "head",
            **common,
            ClusterName=c.name,
            WorkerRoleArn=f"{arn}:role/{c.worker_role}",
            SecretArnPattern=resolved.secret_arn_pattern,
            AlertsTopicArn=resolved.alerts_topic_arn,
            InstanceTypes=worker_instance_types,
            # Unknown only on a dry run before the group and address exist.
            SecurityGroupId=resolved.security_group_id or "*",
            AllocationId=resolved.address_allocation_id or "*",
        )
        self._ensure_role(c.head_role, head_policy)
        self._ensure_instance_profile(c.head_role)

    def _ensure_role(self, name: str, policy: dict[str, Any]) -> None:
        ctx = self.ctx
        try:
            role = ctx.iam.get_role(RoleName=name)["Role"]
        except ClientError as error:
            if error.response["Error"]["Code"] != "NoSuchEntity":
                raise
            role = None
        if role is None:
            ctx.say("create", f"iam role {name}")
            if not ctx.dry_run:
                ctx.iam.create_role(
                    RoleName=name,
                    AssumeRolePolicyDocument=json.dumps(render_policy("ec2_trust")),
                    Description="raydiffusion Ray node role (raydiffusion-aws)",
                    Tags=ctx.tags,
                )
        else:
            tags = ctx.iam.list_role_tags(RoleName=name)["Tags"]
            if not ctx.is_ours(tags):
                raise ProvisioningError(
                    f"iam role {name} exists and was not created by raydiffusion-aws: "
                    "pass --name to use other names"
                )
            ctx.say("exists", f"iam role {name}")
        current = None
        if role is not None:
            try:
                current = ctx.iam.get_role_policy(RoleName=name, PolicyName=name)["PolicyDocument"]
            except ClientError:
                current = None
            if isinstance(current, str):
                current = json.loads(current)
        if current == policy:
            ctx.say("unchanged", f"iam policy {name}")
            return
        ctx.say("create" if current is None else "update", f"iam policy {name} (inline on role {name})")
        if not ctx.dry_run:
            ctx.iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))

    def _ensure_instance_profile(self, name: str) -> None:
        ctx = self.ctx
        try:
            profile = ctx.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
            ctx.say("exists", f"iam instance profile {name}")
        except ClientError as error:
            if error.response["Error"]["Code"] != "NoSuchEntity":
                raise
            ctx.say("create", f"iam instance profile {name}")
            if ctx.dry_run:
                return
            profile = ctx.iam.create_instance_profile(InstanceProfileName=name, Tags=ctx.tags)[
                "InstanceProfile"
            ]
        if name not in [role["RoleName"] for role in profile.get("Roles", [])]:
            ctx.say("attach", f"role {name} to instance profile {name}")
            if not ctx.dry_run:
                ctx.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)

    def status(self, mark: Mark) -> None:
        iam, is_ours = self.ctx.iam, self.ctx.is_ours
        for name in (self.config.worker_role, self.config.head_role):
            try:
                iam.get_role(RoleName=name)
                tags = iam.list_role_tags(RoleName=name)["Tags"]
                mark(f"iam role {name}", "ours" if is_ours(tags) else "not ours")
            except ClientError:
                mark(f"iam role {name}", "missing")
            try:
                profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
                mark(f"iam instance profile {name}", "ours" if is_ours(profile.get("Tags")) else "not ours")
            except ClientError:
                mark(f"iam instance profile {name}", "missing")

    def teardown(self, delete: Delete) -> None:
        iam = self.ctx.iam
        for name in (self.config.head_role, self.config.worker_role):
            try:
                profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
            except ClientError:
                profile = None
            if profile is not None and self.ctx.is_ours(profile.get("Tags")):

                def drop_profile(profile: dict[str, Any] = profile, name: str = name) -> None:
                    for role in profile.get("Roles", []):
                        iam.remove_role_from_instance_profile(
                            InstanceProfileName=name, RoleName=role["RoleName"]
                        )
                    iam.delete_instance_profile(InstanceProfileName=name)

                delete(f"iam instance profile {name}", drop_profile)
            try:
                iam.get_role(RoleName=name)
                tags = iam.list_role_tags(RoleName=name)["Tags"]
            except ClientError:
                tags = None
            if tags is not None and self.ctx.is_ours(tags):

                def drop_role(name: str = name) -> None:
                    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
                        iam.delete_role_policy(RoleName=name, PolicyName=policy)
                    for attached in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
                        iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
                    for profile in iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]:
                        iam.remove_role_from_instance_profile(
                            InstanceProfileName=profile["InstanceProfileName"], RoleName=name
                        )
                    iam.delete_role(RoleName=name)

                delete(f"iam role {name}", drop_role)
