"""A throughput benchmark of the SOAP channel: not a test, a measurement.

    .venv/bin/python -m tests.benchmark [--requests 2000] [--concurrency 16] [--database-url URL]

Starts ``intygstjanst serve`` on a loopback port (SQLite in a temporary directory unless a URL is
given), registers certificates as the national service's own test envelope, then reads and lists
them, and prints requests per second and latency percentiles for each operation. Bounded in count and
time; it only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests import server
from tests.integration import soap as s


def _person(index: int) -> str:
    from tests.reference import with_check_digit

    return with_check_digit(f"19{index % 90 + 10:02d}0101{index % 1000:03d}")


async def _run(base: str, label: str, bodies: list[tuple[str, bytes]], concurrency: int) -> None:
    latencies: list[float] = []
    failures = 0
    queue = list(reversed(bodies))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while queue:
            path, body = queue.pop()
            started = time.perf_counter()
            response = await client.post(
                path, content=body, headers={"Content-Type": "text/xml; charset=utf-8"}
            )
            latencies.append(time.perf_counter() - started)
            failures += response.status_code != 200 or b"<faultcode>" in response.content

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    print(
        f"{label:28} {len(bodies) / elapsed:8.0f} req/s   p50 {quantiles[49] * 1000:6.1f} ms"
        f"   p95 {quantiles[94] * 1000:6.1f} ms   p99 {quantiles[98] * 1000:6.1f} ms   failures {failures}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    env = {
        "INTYG_LOG_LEVEL": "WARNING",
        # Fresh keys of encryption at rest for this run (PostgreSQL gets no generated development keys).
        "INTYG_KEK": f"bench:{base64.b64encode(os.urandom(32)).decode()}",
        "INTYG_LOOKUP_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    if args.database_url:
        env["INTYG_DATABASE_URL"] = args.database_url
    with tempfile.TemporaryDirectory() as workdir, server.running(Path(workdir), env=env) as (base, _):
        count = args.requests
        patients = [_person(i) for i in range(count // 4 + 1)]
        registers = [
            (
                s.path_of("RegisterCertificate", 3),
                s.register_envelope(f"bench-{i}", patients[i % len(patients)]).encode(),
            )
            for i in range(count)
        ]
        gets = [
            (
                s.path_of("GetCertificate", 2),
                s.envelope_for("GetCertificate", 2, s.get_certificate(f"bench-{i}", "HSVARD")),
            )
            for i in range(count)
        ]
        lists = [
            (
                s.path_of("ListCertificatesForCare", 3),
                s.envelope_for(
                    "ListCertificatesForCare",
                    3,
                    s.list_for_care(patients[i % len(patients)], care_giver="SE2321000016-39KJ"),
                ),
            )
            for i in range(count)
        ]
        print(
            f"{count} requests each, concurrency {args.concurrency}, database {args.database_url or 'SQLite'}"
        )
        asyncio.run(_run(base, "RegisterCertificate 3", registers, args.concurrency))
        asyncio.run(_run(base, "GetCertificate 2 (care)", gets, args.concurrency))
        asyncio.run(_run(base, "ListCertificatesForCare 3", lists, args.concurrency))


if __name__ == "__main__":
    main()
