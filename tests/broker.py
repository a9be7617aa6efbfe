"""A throwaway RabbitMQ broker for the tests of the outbox relay (``tests/integration/test_relay.py``).

Modelled on ``tests/postgres.py``: a private node in a fresh temporary directory (its database, log and
Erlang cookie), listening on 127.0.0.1 on a free port, started in a process group of its own so that
the whole group can be killed (``kill``, as a crash: SIGKILL) and started again on the same directory
(``start``), where its durable queues and persistent messages survive. Usable on its own:

    python -m tests.broker run -- CMD [ARGS...]   # start, run CMD with INTYG_TEST_BROKER_URL set, stop

Where Debian's ``rabbitmq-server`` is not installed, ``BrokerUnavailable`` says so, and the tests that
need a broker are skipped with that reason (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ENV_URL = "INTYG_TEST_BROKER_URL"
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
# A node starts in about 5 s on two cores; a slow machine gets longer before the start counts as failed.
START_SECONDS = 60.0


class BrokerUnavailable(RuntimeError):
    """No RabbitMQ server on this machine."""


def find_server() -> Path:
    found = shutil.which("rabbitmq-server")
    for candidate in (SERVER, Path(found) if found else None):
        if candidate is not None and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerUnavailable("no RabbitMQ server (Debian package rabbitmq-server; .ci/run installs it)")


def _free_port() -> int:
    # The distribution port is the next one up: take a pair that is free.
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second, contextlib.suppress(OSError):
                second.bind(("127.0.0.1", port + 1))
                return port
    raise RuntimeError("no free pair of ports")


class Broker:
    """One private node. ``url`` is its AMQP URL; ``kill()`` ends it as a crash does, ``start()`` brings it
    back on the same data and port."""

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.port = port
        self.url = f"amqp://guest:guest@127.0.0.1:{port}/"
        self._process: subprocess.Popen[bytes] | None = None

    def _environment(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base),
            "RABBITMQ_NODENAME": f"intyg{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 1),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }

    def start(self) -> None:
        """Start the node and wait until it accepts AMQP connections."""
        server = find_server()
        log = (self.base / "server.out").open("ab")
        self._process = subprocess.Popen(
            [str(server)],
            env=self._environment(),
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: killed whole, and no Ctrl-C of ours reaches it first
        )
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited ({self._process.returncode}):\n{self._output()}")
            if _accepts_amqp(self.port):
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"rabbitmq-server did not start within {START_SECONDS} s:\n{self._output()}")

    def kill(self) -> None:
        """SIGKILL to the node's whole process group (the Erlang VM and its port helpers), as a crash."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        # epmd, started by the node, outlives it in the same group only if it was started there.
        deadline = time.monotonic() + 10
        while _accepts_amqp(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _output(self) -> str:
        path = self.base / "server.out"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _accepts_amqp(port: int) -> bool:
    # The AMQP port is bound late in the node's boot, once the broker can take connections.
    with socket.socket() as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            return False
        probe.sendall(b"AMQP\x00\x00\x09\x01")
        try:
            return bool(probe.recv(1))
        except OSError:
            return False


def start() -> Broker:
    """A new node in a fresh directory. Always pair with ``stop``."""
    find_server()
    base = Path(tempfile.mkdtemp(prefix="intygmq-"))
    (base / "rabbitmq.conf").write_text(
        # guest may connect from 127.0.0.1 (it is throwaway); small disk and memory alarms would stall
        # a test machine's broker, not protect it.
        "loopback_users = none\ndisk_free_limit.absolute = 50MB\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    (base / ".erlang.cookie").write_text("intygstjanst-test-broker")
    (base / ".erlang.cookie").chmod(0o400)
    broker = Broker(base, _free_port())
    try:
        broker.start()
    except BaseException:
        stop(broker)
        raise
    return broker


def stop(broker: Broker) -> None:
    broker.kill()
    shutil.rmtree(broker.base, ignore_errors=True)


@contextlib.contextmanager
def throwaway_broker() -> Iterator[Broker]:
    broker = start()
    try:
        yield broker
    finally:
        stop(broker)


def run(cmd: list[str]) -> int:
    if not cmd:
        raise SystemExit("usage: python -m tests.broker run -- CMD [ARGS...]")
    try:
        find_server()
    except BrokerUnavailable as exc:
        print(f"broker: broker tests will be SKIPPED: {exc}", file=sys.stderr)
        return subprocess.call(cmd)
    began = time.monotonic()
    with throwaway_broker() as broker:
        print(f"broker: throwaway RabbitMQ at {broker.url} (started in {time.monotonic() - began:.1f}s)")
        return subprocess.call(cmd, env={**os.environ, ENV_URL: broker.url})


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] != ["run"]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    rest = args[1:]
    sys.exit(run(rest[1:] if rest[:1] == ["--"] else rest))
