"""The real service as a process, for tests that need a socket: ``intygstjanst serve`` on a free
loopback port, started with a clean environment (no INTYG_ settings of the caller's shell), waited for
until ready, and stopped with SIGTERM (SIGKILL after 20 s)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx

INTYGSTJANST = Path(sys.executable).parent / "intygstjanst"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what} within {seconds} s")


def start(
    workdir: Path,
    port: int,
    *args: str,
    env: dict[str, str] | None = None,
    quiet: bool = True,
    log: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """``log``: where its stdout and stderr go (else nowhere, or the test's own with ``quiet=False``).
    The metrics are served on a free port of their own unless ``env`` names INTYG_METRICS_PORT: never on
    the default port, which another service on the machine may hold."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("INTYG_", "PROMETHEUS_"))}
    output = log if log is not None else subprocess.DEVNULL if quiet else None
    return subprocess.Popen(
        [str(INTYGSTJANST), "serve", "--port", str(port), *args],
        cwd=workdir,
        env={**clean, "INTYG_METRICS_PORT": str(free_port()), **(env or {})},
        stdout=output,
        stderr=subprocess.STDOUT if log is not None else output,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running(
    workdir: Path, *args: str, env: dict[str, str] | None = None, log: IO[bytes] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A ready service on plain HTTP: its base URL and its process."""
    port = free_port()
    process = start(workdir, port, *args, env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "the service is ready")
        yield base, process
    finally:
        stop(process)
