"""Command line of `raydiffusion-aws` (also `python -m serve_app.provisioning`).

raydiffusion-aws bootstrap --region us-west-2 --bucket my-sd-bucket --allow-cidr 203.0.113.7/32
raydiffusion-aws status    --region us-west-2 --bucket my-sd-bucket
raydiffusion-aws teardown  --region us-west-2 --bucket my-sd-bucket
raydiffusion-aws image-uri                     # what `make image` builds and pushes
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

import yaml

from serve_app.provisioning.stack import DLAMI_PARAMETER, AwsStack, ProvisioningError, StackConfig


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a CIDR block: {value!r}") from error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raydiffusion-aws", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def stack_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--region", required=True)
        sub.add_argument("--bucket", required=True, help="S3 bucket for weights, images and job records")
        sub.add_argument("--secret-id", default="raydiffusion", help="Secrets Manager secret name or ARN")
        sub.add_argument("--name", default="raydiffusion", help="names of roles, profiles, group, repository")
        sub.add_argument("--vpc-id", default=None, help="default: the region's default VPC")
        sub.add_argument("--cluster-yaml", type=Path, default=Path("cluster.yaml"))
        sub.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")

    bootstrap = commands.add_parser("bootstrap", help="create or reuse everything; write cluster.yaml")
    stack_args(bootstrap)
    bootstrap.add_argument(
        "--allow-cidr", type=_cidr, default=None, help="who may reach port 8000 (default: nobody)"
    )
    bootstrap.add_argument(
        "--ssh-cidr", type=_cidr, default="0.0.0.0/0", help="who may SSH (ray up needs it)"
    )
    bootstrap.add_argument("--ami", default=None, help="AMI id (default: the current GPU Deep Learning AMI)")
    bootstrap.add_argument(
        "--ami-parameter", default=DLAMI_PARAMETER, help="public SSM parameter naming the AMI"
    )
    bootstrap.add_argument(
        "--refresh-ami",
        action="store_true",
        help="the parameter's newest AMI although cluster.yaml holds one (ray up then replaces the head)",
    )
    bootstrap.add_argument("--image-tag", default=None, help="image tag (default: the project version)")

    status = commands.add_parser("status", help="show what exists and what cluster.yaml holds")
    stack_args(status)

    teardown = commands.add_parser("teardown", help="delete what bootstrap created (tagged), nothing else")
    stack_args(teardown)
    teardown.add_argument("--empty-bucket", action="store_true", help="also delete the bucket's objects")

    image = commands.add_parser("image-uri", help="print the image cluster.yaml runs (for `make image`)")
    image.add_argument("--cluster-yaml", type=Path, default=Path("cluster.yaml"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "image-uri":
        docker = yaml.safe_load(args.cluster_yaml.read_text())["docker"]
        print(docker["worker_image"])
        return 0
    config = StackConfig(
        region=args.region,
        bucket=args.bucket,
        secret_id=args.secret_id,
        name=args.name,
        vpc_id=args.vpc_id,
        allow_cidr=getattr(args, "allow_cidr", None),
        ssh_cidr=getattr(args, "ssh_cidr", "0.0.0.0/0"),
        ami=getattr(args, "ami", None),
        ami_parameter=getattr(args, "ami_parameter", DLAMI_PARAMETER),
        refresh_ami=getattr(args, "refresh_ami", False),
        **({"image_tag": args.image_tag} if getattr(args, "image_tag", None) else {}),
    )
    stack = AwsStack(config, args.cluster_yaml, dry_run=args.dry_run)
    try:
        if args.command == "bootstrap":
            stack.bootstrap()
            print("next: make image && ray up cluster.yaml && make deploy  (see README, Deploy on AWS)")
            print("then: raydiffusion-aws status ... prints the URL to paste into Discord")
        elif args.command == "status":
            stack.status()
        else:
            stack.teardown(empty_bucket=args.empty_bucket)
    except ProvisioningError as error:
        print(f"raydiffusion-aws: {error}", file=sys.stderr)
        return 2
    return 0
