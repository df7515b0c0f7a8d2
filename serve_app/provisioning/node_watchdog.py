"""Run on every GPU worker: a worker whose head has been gone for a while terminates itself.

Only the head's autoscaler ever terminates workers. If the head dies (instance lost, Ray down
after a reboot), GPU workers would run, and bill, with nothing left to stop them. Each worker
checks that the head's GCS port answers; after ``--grace`` seconds without an answer it calls
EC2 TerminateInstances on itself. The worker's role may terminate only the cluster's *worker*
instances (tags ``ray-cluster-name`` and ``ray-node-kind: worker``), never the head.

cluster.yaml starts it in the background after `ray start` on each worker::

    python -m serve_app.provisioning.node_watchdog --head $RAY_HEAD_IP:6379
"""

from __future__ import annotations

import argparse
import logging
import socket
import time

import boto3

from serve_app.provisioning.head_address import instance_id

logger = logging.getLogger("raydiffusion.watchdog")


class HeadWatch:
    """Decides, from successive probes, when the head has been gone for ``grace_s``."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._lost_since: float | None = None

    def observe(self, reachable: bool, now: float) -> bool:
        """Record one probe; True once the head has been unreachable for the whole grace period."""
        if reachable:
            self._lost_since = None
            return False
        if self._lost_since is None:
            self._lost_since = now
        return now - self._lost_since >= self.grace_s


def head_reachable(address: str, timeout_s: float = 5.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve_app.provisioning.node_watchdog", description=__doc__
    )
    parser.add_argument("--head", required=True, help="host:port of the head's GCS (RAY_HEAD_IP:6379)")
    parser.add_argument("--grace", type=float, default=600.0, help="seconds without the head before stopping")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between probes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    watch = HeadWatch(args.grace)
    while True:
        reachable = head_reachable(args.head)
        if watch.observe(reachable, time.monotonic()):
            me = instance_id()
            logger.warning(
                "head %s unreachable for %.0f s: terminating this worker (%s)", args.head, args.grace, me
            )
            boto3.client("ec2").terminate_instances(InstanceIds=[me])
            return 0
        if not reachable:
            logger.warning("head %s unreachable", args.head)
        time.sleep(args.interval)  # the probe period, not a synchronisation


if __name__ == "__main__":
    raise SystemExit(main())
