"""The two load generators: ``peak`` (closed loop, wrk) and ``paced`` (open loop, asyncio).

Both share the machine's two cores with the server and PostgreSQL, so the generator must cost little. ``peak``
runs wrk (C, Debian's package), one thread driving every connection. Measured here against the hello app
(November 2026): on asyncio and h11, wrk drew 5,700-6,100 req/s using 10% of a core, this module's client
5,600-5,900 using 21%; on uvloop and httptools (the event loop and parser ``serve`` runs on) wrk drew
11,400-12,100 using 13-17%, the client 11,200-11,400 using 25%, and in a minute when other work shared the
machine 6,500-8,900 against wrk's 8,700-10,700. So the peak, the denominator of every ratio, is left to wrk.

``paced`` sends at a fixed rate, half the peak, which wrk cannot do without coordinated omission (it
sends only when an answer came back). Each request has its scheduled time and its latency counts from
then, so a request held back behind a slow one counts its wait. At half of peak a lean asyncio client
on raw keep-alive streams (uvloop where installed) keeps up and knows exactly what it sent, which the
statements-per-request figure needs. Both send prepared raw HTTP/1.1 requests in turn; ``UNIQUE`` in
a request becomes a counter that is new for every request sent (ids that must never repeat).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UNIQUE = b"##########"  # as wide as the counter, so Content-Length holds
WRK_SCRIPT = Path(__file__).with_name("wrk.lua")
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def http_request(
    method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Workload:
    """Requests sent in turn, and what a successful answer's body holds (b"": any 200 will do)."""

    name: str
    requests: list[bytes]
    expect: bytes = b""


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failures: int
    failed_answer: bytes = b""  # the first answer that was not a success (paced only)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk_missing() -> str | None:
    """Why ``peak`` cannot run here, or None."""
    if shutil.which("wrk") is None:
        return "wrk is not installed: apt-get install wrk (Debian), then run the benchmark again"
    return None


def peak(port: int, work: Workload, *, seconds: float, connections: int, first: int = 0) -> Result:
    """Closed loop: ``connections`` connections, each sending its next request when the last is answered."""
    with tempfile.NamedTemporaryFile(prefix="bench-", suffix=".requests") as data:
        for raw in work.requests:
            pieces = raw.split(UNIQUE)
            data.write(f"{len(pieces)}\n".encode())
            for piece in pieces:
                data.write(f"{len(piece)}\n".encode() + piece)
        data.flush()
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s"]
        command += ["-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}/", "--", data.name]
        command += [work.expect.decode(), str(first)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            output, _ = process.communicate(timeout=seconds + 60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    line = next((x for x in output.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result for {work.name}:\n{output}")
    found = json.loads(line.removeprefix("BENCH "))
    return Result(
        found["requests"],
        found["seconds"],
        found["p50_ms"],
        found["p99_ms"],
        found["failures"] + found["errors"],
    )


def paced(
    port: int, work: Workload, *, rate: float | None, count: int, connections: int, first: int = 0
) -> Result:
    """Open loop: ``count`` requests, request i scheduled at ``i / rate`` seconds from the start, its
    latency counted from then (``rate`` None: each connection sends as soon as it is free, for the
    set-up). At most ``connections`` are in flight; a request that finds none free waits, and that
    wait is part of its latency. Gives up on what is not answered 30 s after its last scheduled time."""
    return _run(_paced(port, work, rate, count, connections, first))


async def _paced(
    port: int, work: Workload, rate: float | None, count: int, connections: int, first: int
) -> Result:
    loop = asyncio.get_running_loop()
    pieces = [raw.split(UNIQUE) for raw in work.requests]
    latencies: list[float] = []
    failures = 0
    failed_answer = b""
    next_index = 0
    start = loop.time()

    async def connection() -> None:
        nonlocal next_index, failures, failed_answer
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < count:
                index, next_index = next_index, next_index + 1
                scheduled = start + index / rate if rate else loop.time()
                if (wait := scheduled - loop.time()) > 0:
                    await asyncio.sleep(wait)
                parts = pieces[index % len(pieces)]
                writer.write((b"%010d" % (first + index + 1)).join(parts))
                status, body = await _answer(reader)
                latencies.append(loop.time() - scheduled)
                if status != 200 or work.expect not in body:
                    failures += 1
                    failed_answer = failed_answer or b"%d " % status + body[:2000]
        finally:
            writer.close()

    deadline = (count / rate if rate else 0) + 30
    began = time.perf_counter()
    tasks = [asyncio.create_task(connection()) for _ in range(min(connections, count))]
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if errors := [e for e in (task.exception() for task in done) if e is not None]:
        raise RuntimeError(f"{work.name}: {len(errors)} connections failed") from errors[0]
    elapsed = time.perf_counter() - began
    latencies.sort()
    unanswered = count - len(latencies)
    return Result(
        len(latencies),
        elapsed,
        _percentile(latencies, 50) * 1000,
        _percentile(latencies, 99) * 1000,
        failures + unanswered,
        failed_answer,
    )


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = _LENGTH.search(head)
    if length is None:  # every answer measured here has a Content-Length
        raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
    return int(head[9:12]), await reader.readexactly(int(length[1]))


def _percentile(ordered: list[float], percent: int) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, len(ordered) * percent // 100)]


def _run(coroutine: Coroutine[Any, Any, Result]) -> Result:
    uvloop = _uvloop()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        return runner.run(coroutine)


def _uvloop() -> Any:
    """uvloop where installed (imported by name: it is no dependency of the project), else None."""
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def client_loop() -> str:
    """Which event loop ``paced`` runs on."""
    return "uvloop" if _uvloop() else "asyncio"
