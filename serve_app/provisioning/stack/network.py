"""The VPC the cluster runs in, the zones it may use, its security group, and the head's Elastic IP.

The Elastic IP is what keeps the public address (and so CloudFront's origin and the Discord URL)
when the head is replaced: the head associates it at boot (serve_app/provisioning/head_address.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from serve_app.provisioning.stack.base import (
    CLOUDFRONT_PREFIX_LIST,
    SERVE_PORT,
    STACK_TAG,
    Context,
    Delete,
    Family,
    Mark,
    ProvisioningError,
    Resolved,
)


class Network(Family):
    def __init__(self, ctx: Context, cluster_yaml: Path) -> None:
        super().__init__(ctx)
        self.cluster_yaml = cluster_yaml

    def vpc_id(self) -> str:
        if self.config.vpc_id:
            return self.config.vpc_id
        vpcs = self.ctx.ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise ProvisioningError(f"no default VPC in {self.config.region}: pass --vpc-id")
        return vpcs[0]["VpcId"]

    def find_security_group(self, vpc_id: str) -> dict[str, Any] | None:
        groups = self.ctx.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "group-name", "Values": [self.config.name]},
            ]
        )["SecurityGroups"]
        return groups[0] if groups else None

    def _group_or_none(self) -> dict[str, Any] | None:
        try:
            return self.find_security_group(self.vpc_id())
        except ProvisioningError:
            return None

    def ensure(self, resolved: Resolved) -> None:
        ctx, c = self.ctx, self.config
        vpc_id = self.vpc_id()
        resolved.availability_zones = self._usable_zones(vpc_id)
        ctx.say(
            "zones",
            f"{','.join(resolved.availability_zones)} (public subnets of {vpc_id} offering the GPU type)",
        )
        group = self.find_security_group(vpc_id)
        if group is None:
            ctx.say("create", f"security group {c.name} in {vpc_id}")
            if ctx.dry_run:
                ctx.say("open", f"tcp/22 from {c.ssh_cidr}; all traffic within the group")
                if c.allow_cidr:
                    ctx.say("open", f"tcp/{SERVE_PORT} from {c.allow_cidr}")
                return
            group_id = ctx.ec2.create_security_group(
                GroupName=c.name,
                Description="raydiffusion Ray cluster (raydiffusion-aws)",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": ctx.tags}],
            )["GroupId"]
            group = ctx.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
        elif not ctx.is_ours(group.get("Tags")):
            raise ProvisioningError(
                f"security group {c.name} in {vpc_id} was not created by raydiffusion-aws"
            )
        else:
            ctx.say("exists", f"security group {c.name} ({group['GroupId']})")
        resolved.security_group_id = group["GroupId"]
        self._reconcile_rules(group)

    def ensure_address(self, resolved: Resolved) -> None:
        """One Elastic IP for the head, tagged: CloudFront's origin is its DNS name, which stays."""
        ctx = self.ctx
        address = self.find_address()
        if address is None:
            ctx.say("create", f"elastic ip {self.config.name}-head (the head's stable address)")
            if ctx.dry_run:
                return
            address = ctx.ec2.allocate_address(
                Domain="vpc",
                TagSpecifications=[
                    {
                        "ResourceType": "elastic-ip",
                        "Tags": [*ctx.tags, {"Key": "Name", "Value": f"{self.config.name}-head"}],
                    }
                ],
            )
        else:
            ctx.say("exists", f"elastic ip {address['PublicIp']} ({address['AllocationId']})")
        resolved.address_allocation_id = address["AllocationId"]
        resolved.address_dns = public_dns_name(address["PublicIp"], self.config.region)

    def find_address(self) -> dict[str, Any] | None:
        found = self.ctx.ec2.describe_addresses(
            Filters=[{"Name": f"tag:{STACK_TAG}", "Values": [self.config.name]}]
        )["Addresses"]
        return found[0] if found else None

    def _cloudfront_prefix_list(self) -> str:
        lists = self.ctx.ec2.describe_managed_prefix_lists(
            Filters=[{"Name": "prefix-list-name", "Values": [CLOUDFRONT_PREFIX_LIST]}]
        )["PrefixLists"]
        if not lists:
            raise ProvisioningError(
                f"no managed prefix list {CLOUDFRONT_PREFIX_LIST} in {self.config.region}"
            )
        return lists[0]["PrefixListId"]

    def _reconcile_rules(self, group: dict[str, Any]) -> None:
        """Exactly: all traffic within the group (Ray), SSH from --ssh-cidr, 8000 from --allow-cidr.

        Ray adds its own rules only to a group with none, so this group carries everything Ray
        would have added; the serve port is open to nobody unless --allow-cidr names someone.
        """
        ctx, c = self.ctx, self.config
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
            ctx.say("open", "all traffic within the group (Ray's nodes talk to each other)")
            if not ctx.dry_run:
                ctx.ec2.authorize_security_group_ingress(
                    GroupId=group_id,
                    IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group_id}]}],
                )
        for port, wanted in wanted_cidrs.items():
            for cidr in sorted(wanted - current[port]):
                ctx.say("open", f"tcp/{port} from {cidr}")
                if not ctx.dry_run:
                    ctx.ec2.authorize_security_group_ingress(
                        GroupId=group_id, IpPermissions=[_tcp(port, cidr)]
                    )
            for cidr in sorted(current[port] - wanted):
                ctx.say("close", f"tcp/{port} from {cidr}")
                if not ctx.dry_run:
                    ctx.ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=[_tcp(port, cidr)])
            if wanted and wanted == current[port]:
                ctx.say("unchanged", f"tcp/{port} from {', '.join(sorted(wanted))}")
        # CloudFront reaches the head from its origin-facing addresses only, which AWS keeps in a
        # managed prefix list: no CIDR of ours to maintain when CloudFront adds addresses.
        prefix_list = self._cloudfront_prefix_list()
        has_front = any(
            permission.get("FromPort") == SERVE_PORT
            and any(p.get("PrefixListId") == prefix_list for p in permission.get("PrefixListIds", []))
            for permission in group.get("IpPermissions", [])
        )
        if has_front:
            ctx.say("unchanged", f"tcp/{SERVE_PORT} from CloudFront ({prefix_list})")
        else:
            ctx.say("open", f"tcp/{SERVE_PORT} from CloudFront's origin-facing addresses ({prefix_list})")
            if not ctx.dry_run:
                ctx.ec2.authorize_security_group_ingress(
                    GroupId=group_id,
                    IpPermissions=[
                        {
                            "IpProtocol": "tcp",
                            "FromPort": SERVE_PORT,
                            "ToPort": SERVE_PORT,
                            "PrefixListIds": [{"PrefixListId": prefix_list, "Description": "CloudFront"}],
                        }
                    ],
                )

    def _usable_zones(self, vpc_id: str) -> list[str]:
        ec2 = self.ctx.ec2
        subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
        # Ray launches into public subnets only (unless use_internal_ips).
        zones = {
            s["AvailabilityZone"]
            for s in subnets
            if s.get("MapPublicIpOnLaunch") and s["State"] == "available"
        }
        for instance_type in self.worker_instance_types():
            offered = ec2.describe_instance_type_offerings(
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [instance_type]}],
            )["InstanceTypeOfferings"]
            zones &= {o["Location"] for o in offered}
        if not zones:
            raise ProvisioningError(
                f"no public subnet of {vpc_id} is in a zone offering "
                f"{', '.join(self.worker_instance_types())}"
            )
        return sorted(zones)

    def worker_instance_types(self) -> list[str]:
        cluster = yaml.safe_load(self.cluster_yaml.read_text())
        head = cluster["head_node_type"]
        return sorted(
            {
                t["node_config"]["InstanceType"]
                for name, t in cluster["available_node_types"].items()
                if name != head
            }
        )

    def status(self, mark: Mark) -> None:
        group = self._group_or_none()
        if group is None:
            mark(f"security group {self.config.name}", "missing")
        else:
            mark(
                f"security group {self.config.name} ({group['GroupId']})",
                "ours" if self.ctx.is_ours(group.get("Tags")) else "not ours",
            )

    def status_address(self, mark: Mark) -> None:
        address = self.find_address()
        if address is None:
            mark(f"elastic ip {self.config.name}-head", "missing")
        else:
            where = f" on {address['InstanceId']}" if address.get("InstanceId") else " (not associated yet)"
            mark(f"elastic ip {address['PublicIp']} ({address['AllocationId']}){where}", "ours")

    def refuse_while_in_use(self) -> None:
        """Teardown stops before deleting anything while a node still holds the address or group."""
        address = self.find_address()
        if address is not None and address.get("InstanceId"):
            raise ProvisioningError(
                f"elastic ip {address['PublicIp']} is on {address['InstanceId']}: "
                "run `ray down cluster.yaml` first"
            )
        group = self._group_or_none()
        if group is not None and self.ctx.is_ours(group.get("Tags")):
            running = self.ctx.ec2.describe_instances(
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

    def teardown_address(self, delete: Delete) -> None:
        address = self.find_address()
        if address is None:
            return
        if address.get("InstanceId"):
            raise ProvisioningError(
                f"elastic ip {address['PublicIp']} is on {address['InstanceId']}: "
                "run `ray down cluster.yaml` first"
            )
        delete(
            f"elastic ip {address['PublicIp']} ({address['AllocationId']})",
            lambda: self.ctx.ec2.release_address(AllocationId=address["AllocationId"]),
        )

    def teardown(self, delete: Delete) -> None:
        ec2 = self.ctx.ec2
        group = self._group_or_none()
        if group is None or not self.ctx.is_ours(group.get("Tags")):
            return
        running = ec2.describe_instances(
            Filters=[
                {"Name": "instance.group-id", "Values": [group["GroupId"]]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
            ]
        )["Reservations"]
        if running:
            raise ProvisioningError(
                f"instances still use security group {group['GroupId']}: run `ray down cluster.yaml` first"
            )
        delete(
            f"security group {self.config.name} ({group['GroupId']})",
            lambda: ec2.delete_security_group(GroupId=group["GroupId"]),
        )


def public_dns_name(ip: str, region: str) -> str:
    """EC2's public DNS name of an address: CloudFront origins must be names, never IPs."""
    domain = "compute-1.amazonaws.com" if region == "us-east-1" else f"{region}.compute.amazonaws.com"
    return f"ec2-{ip.replace('.', '-')}.{domain}"


def _tcp(port: int, cidr: str) -> dict[str, Any]:
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}
