"""Run on the head at boot: take the cluster's Elastic IP, and raise an alarm if this head is lost.

    python -m serve_app.provisioning.head_address --region R --allocation-id eipalloc-... --cluster-name N

CloudFront's origin is the Elastic IP's DNS name: a replaced head (an upgrade that changes the
launch hash, a lost instance) gets the same address, and the HTTPS URL Discord knows keeps
working. cluster.yaml starts this in the background as the head's last start command, after a
delay: associating the address changes the head's public IP, which would cut the SSH session
`ray up` is still using. The head's role may associate only this allocation, and only with the
cluster's own instances.

The alarm (``<cluster>-head-lost``, CloudWatch, on this instance's status checks, missing data
counted as failing so a terminated head alarms too) publishes to the alerts topic
(ALERTS_SNS_TOPIC_ARN in the container's environment): the head's loss reaches whoever
subscribed. A replaced head overwrites the alarm with its own instance id.
"""

from __future__ import annotations

import argparse
import os
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


def alarm_on_loss(cloudwatch: object, cluster_name: str, instance: str, topic_arn: str) -> str:
    """Create or replace the head-lost alarm for ``instance``; returns its name."""
    name = f"{cluster_name}-head-lost"
    cloudwatch.put_metric_alarm(  # type: ignore[attr-defined]
        AlarmName=name,
        AlarmDescription=f"raydiffusion: the Ray head {instance} of cluster {cluster_name} failed or is gone",
        Namespace="AWS/EC2",
        MetricName="StatusCheckFailed",
        Dimensions=[{"Name": "InstanceId", "Value": instance}],
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=5,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="breaching",  # a terminated instance sends no metrics at all
        AlarmActions=[topic_arn],
        OKActions=[topic_arn],
    )
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve_app.provisioning.head_address", description=__doc__
    )
    parser.add_argument("--region", required=True)
    parser.add_argument("--allocation-id", required=True)
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument(
        "--delay", type=float, default=30.0, help="seconds to let `ray up` finish its SSH steps"
    )
    args = parser.parse_args(argv)
    time.sleep(args.delay)  # not synchronisation: `ray up` gives no signal on the head when it is done
    me = instance_id()
    print(associate(boto3.client("ec2", region_name=args.region), args.allocation_id, me), flush=True)
    topic = os.environ.get("ALERTS_SNS_TOPIC_ARN")
    if topic:
        cloudwatch = boto3.client("cloudwatch", region_name=args.region)
        print(f"alarm {alarm_on_loss(cloudwatch, args.cluster_name, me, topic)} -> {topic}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
