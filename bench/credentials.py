"""``python -m bench.credentials``: what a credential lookup costs a request, with AWS up and hung.

Every protected request awaits ``CredentialSource.current()`` (serve_app/config/credentials.py)
for the API keys, and the keys come from Secrets Manager, refreshed in the background every
``secrets_ttl_s``. The tests prove the structure (a lookup returns the last good keys while a
refresh is in flight, tests/aws/test_secret_refresh.py); how long a lookup takes is measured here,
not asserted there (issue 22, item 16).

Real parts: moto's standalone Secrets Manager over HTTP, reached through a relay that can go silent
(serve_app/testing/hanging_relay.py), so the refreshes of the second phase really hang in boto3.
Two phases of ``--seconds`` each, with a refresh due every ``--ttl`` seconds:

1. ``answering``: AWS answers; lookups run beside refreshes that succeed;
2. ``hung``: AWS accepts and never answers; lookups run beside refreshes that hang until their
   timeout.

Writes ``bench/results/<date>-credentials.json`` and README's generated section between
``<!-- bench-credentials:start -->`` and ``<!-- bench-credentials:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import socket
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench.gpu_report.readme import update

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench-credentials:start -->", "<!-- bench-credentials:end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--ttl", type=float, default=0.3, help="secrets_ttl_s: a refresh due this often")
    parser.add_argument("--timeout", type=float, default=1.0, help="secrets_timeout_s of each refresh")
    parser.add_argument("--interval", type=float, default=0.005, help="pause between two lookups")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--no-readme", action="store_true")
    return parser.parse_args(argv)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summarise(latencies_s: list[float], mid_refresh: int) -> dict[str, Any]:
    ordered = sorted(latencies_s)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "lookups": len(ordered),
        "answered_while_a_refresh_was_in_flight": mid_refresh,
        "p50_ms": round(at(0.50), 4),
        "p99_ms": round(at(0.99), 4),
        "max_ms": round(ordered[-1] * 1000, 4),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 4),
    }


async def _phase(source: Any, seconds: float, interval: float) -> dict[str, Any]:
    latencies: list[float] = []
    mid_refresh = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter()
        await source.current()
        latencies.append(time.perf_counter() - started)
        refresh = source._refresh  # in flight: this lookup did not wait for it
        mid_refresh += refresh is not None and not refresh.done()
        await asyncio.sleep(interval)
    return summarise(latencies, mid_refresh)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import boto3
    from moto.server import ThreadedMotoServer

    from serve_app.config.credentials import CredentialSource
    from serve_app.config.settings import AppSettings
    from serve_app.testing.hanging_relay import HangingRelay

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    relay = HangingRelay(port)
    saved = {
        name: os.environ.get(name)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    }
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}",
        }
    )
    secret_id = f"raydiffusion/bench-{uuid.uuid4().hex[:8]}"
    try:
        direct = boto3.client("secretsmanager", endpoint_url=f"http://127.0.0.1:{port}")
        direct.create_secret(Name=secret_id, SecretString=json.dumps({"RAYDIFFUSION_API_KEYS": "k1"}))
        settings = AppSettings(
            secrets_manager_secret_id=secret_id, secrets_ttl_s=args.ttl, secrets_timeout_s=args.timeout
        )

        async def run() -> dict[str, Any]:
            source = CredentialSource(settings)
            started = time.perf_counter()
            first = await source.current()
            first_read_ms = (time.perf_counter() - started) * 1000
            assert first.api_keys == ("k1",), first  # the bench measures a source that works
            answering = await _phase(source, args.seconds, args.interval)
            relay.hang.set()
            hung = await _phase(source, args.seconds, args.interval)
            hung["refreshes_that_hung"] = relay.swallowed_requests
            return {"first_read_ms": round(first_read_ms, 2), "answering": answering, "hung": hung}

        return asyncio.run(run())
    finally:
        relay.close()
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def section(report: dict[str, Any], stem: str) -> str:
    rows = [
        f"Measured by `python -m bench.credentials` on {report['date']} ({report['machine']}): every "
        f"protected request awaits one credential lookup; a refresh is due every {report['ttl_s']} s "
        f"and times out after {report['timeout_s']} s; moto's Secrets Manager behind a relay that "
        f"goes silent in the second phase. Full figures: `bench/results/{stem}.json`.",
        "",
        "| AWS | lookups | answered while a refresh was in flight | p50 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (("answering", "answering"), ("hung", "accepting, never answering")):
        phase = report[name]
        rows.append(
            f"| {label} | {phase['lookups']} | {phase['answered_while_a_refresh_was_in_flight']} | "
            f"{phase['p50_ms']:.3f} ms | {phase['p99_ms']:.3f} ms | {phase['max_ms']:.3f} ms |"
        )
    first = report["first_read_ms"]
    rows += ["", f"The first read (the one lookup that waits, up to the timeout): {first} ms."]
    return "\n".join(rows)


def update_readme(readme: Path, text: str) -> None:
    update(readme, text, START, END)  # the GPU report's section writer, with this section's markers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = measure(args)
    report = {
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "ttl_s": args.ttl,
        "timeout_s": args.timeout,
        **figures,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{report['date']}-credentials"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if not args.no_readme:
        update_readme(ROOT / "README.md", section(report, stem))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
