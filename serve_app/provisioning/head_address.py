"""Run on the head at boot: take the cluster's Elastic IP, so the address outlives the head.

    python -m serve_app.provisioning.head_address --region R --allocation-id eipalloc-...

CloudFront's origin is the Elastic IP's DNS name: a replaced head (an upgrade that changes the
launch hash, a lost instance) gets the same address, and the HTTPS URL Discord knows keeps
working. cluster.yaml starts this in the background as the head's last start command, after a
delay: associating the address changes the head's public IP, which would cut the SSH session
`ray up` is still using. The head's role may associate only this allocation, and only with the
cluster's own instances.
"""

from __future__ import annotations

import argparse
import time
import urllib.request

import boto3

IMDS = "http://169.254.169.254/latest"


def instance_id(timeout_s: float = 2.0) -> str:
    """This instance's id from the metadata service (IMDSv2: token first)."""
    token_request = urllib.request.Request(
        f"{IMDS}/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    with urllib.request.urlopen(token_request, timeout=timeout_s) as response:
        token = response.read().decode()
    request = urllib.request.Request(
        f"{IMDS}/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return response.read().decode()


def associate(ec2: object, allocation_id: str, instance: str) -> str:
    """Associate unless already ours; returns what was done (for the log)."""
    address = ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"][0]  # type: ignore[attr-defined]
    if address.get("InstanceId") == instance:
        return f"{address['PublicIp']} already on {instance}"
    ec2.associate_address(AllocationId=allocation_id, InstanceId=instance, AllowReassociation=True)  # type: ignore[attr-defined]
    return f"{address['PublicIp']} associated with {instance} (was {address.get('InstanceId') or 'free'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve_app.provisioning.head_address", description=__doc__
    )
    parser.add_argument("--region", required=True)
    parser.add_argument("--allocation-id", required=True)
    parser.add_argument(
        "--delay", type=float, default=30.0, help="seconds to let `ray up` finish its SSH steps"
    )
    args = parser.parse_args(argv)
    time.sleep(args.delay)  # not synchronisation: `ray up` gives no signal on the head when it is done
    ec2 = boto3.client("ec2", region_name=args.region)
    print(associate(ec2, args.allocation_id, instance_id()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
