"""Command line of `raydiffusion-aws` (also `python -m serve_app.provisioning`).

raydiffusion-aws bootstrap --region us-west-2 --bucket my-sd-bucket --ssh-cidr 203.0.113.7/32
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
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

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
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would change, change nothing (it reads your account: credentials needed too)",
        )

    bootstrap = commands.add_parser("bootstrap", help="create or reuse everything; write cluster.yaml")
    stack_args(bootstrap)
    bootstrap.add_argument(
        "--allow-cidr",
        type=_cidr,
        default=None,
        help="who else may reach port 8000 directly (default: nobody; CloudFront always can)",
    )
    bootstrap.add_argument(
        "--ssh-cidr",
        type=_cidr,
        required=True,
        help="who may SSH to the nodes (ray up needs it), e.g. your address: "
        "$(curl -s https://checkip.amazonaws.com)/32; 0.0.0.0/0 opens it to everyone",
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


def ports_plan(allow_cidr: str | None, ssh_cidr: str) -> list[str]:
    """Which ports the security group opens, to whom: said before anything is created."""
    everyone = " (everyone: narrow it with --ssh-cidr YOUR.IP/32)" if ssh_cidr == "0.0.0.0/0" else ""
    return [
        f"port 22 (SSH, ray up): {ssh_cidr}{everyone}",
        "port 8000 (the API): CloudFront's origin-facing addresses"
        + (f" and {allow_cidr}" if allow_cidr else "; nobody else (--allow-cidr to add someone)"),
        "all ports: between the cluster's own nodes",
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except (NoCredentialsError, PartialCredentialsError):
        print(
            "raydiffusion-aws: no AWS credentials found: run `aws configure` (or set AWS_PROFILE); "
            "--dry-run reads your account too, so it needs them as well",
            file=sys.stderr,
        )
    except EndpointConnectionError as error:
        print(f"raydiffusion-aws: cannot reach AWS ({error}); check the network, --region", file=sys.stderr)
    except ClientError as error:
        detail = error.response.get("Error", {})
        code, message = detail.get("Code"), detail.get("Message")
        print(f"raydiffusion-aws: AWS refused {error.operation_name}: {code}: {message}", file=sys.stderr)
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        if args.command != "image-uri":
            raise
        print(f"raydiffusion-aws: {args.cluster_yaml} names no image ({error})", file=sys.stderr)
    return 2


def _main(args: argparse.Namespace) -> int:
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
            for line in ports_plan(args.allow_cidr, args.ssh_cidr):
                print(f"{'[dry-run] ' if args.dry_run else ''}{'ports':<14} {line}")
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
