"""A throwaway PostgreSQL cluster for the test suite.

Used by ``./dev test``; usable on its own:

    python -m tests.postgres run -- CMD [ARGS...]   # start, run CMD with INTYG_TEST_POSTGRES_URL set, stop
    python -m tests.postgres start                  # start; print shell `export` lines (URL and DIR)
    python -m tests.postgres stop DIR               # stop the cluster in DIR and remove DIR

or from Python:

    with throwaway_cluster() as url:
        ...

The cluster lives in a fresh temporary directory (data, log and unix socket), listens only on
127.0.0.1 on a free port, trusts loopback connections (it is throwaway), runs with fsync off, and
holds one database, ``intyg``. When running as root, the server runs as the ``postgres`` system
user if there is one, else as ``intygpg`` (created with useradd), since postgres refuses root.
``run`` leaves INTYG_TEST_POSTGRES_URL alone when it is already set, and runs CMD without a
cluster (saying why) when no PostgreSQL server binaries are found.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ENV_URL = "INTYG_TEST_POSTGRES_URL"
DB_NAME = "intyg"
DB_USER = "intyg"
FALLBACK_OS_USER = "intygpg"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres (PATH first, then /usr/lib/postgresql)."""
    candidates: list[Path] = []
    for tool in ("pg_ctl", "initdb"):
        found = shutil.which(tool)
        if found:
            candidates.append(Path(os.path.realpath(found)).parent)

    def version(path: str) -> tuple[int, ...]:
        part = Path(path).parent.name
        return tuple(int(x) for x in part.split(".") if x.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    for cand in candidates:
        if all(os.access(cand / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return cand
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or under /usr/lib/postgresql/*/bin"
    )


def _os_user() -> str | None:
    """The unprivileged user to run the server as, when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_OS_USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_OS_USER],
        check=True,
    )
    return FALLBACK_OS_USER


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], user: str | None, **kwargs: object) -> None:
    """Run a server tool (as `user` when given); raise with its output on failure."""
    if user is not None:  # drop root entirely: uid, gid and supplementary groups
        entry = pwd.getpwnam(user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    proc = subprocess.run(
        cmd,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}")


def _url(port: int) -> str:
    return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{port}/{DB_NAME}"


def start() -> tuple[str, Path]:
    """Start a cluster; return (SQLAlchemy URL, temporary directory). Always pair with stop(dir)."""
    bindir = find_bindir()
    user = _os_user()
    base = Path(tempfile.mkdtemp(prefix="intygpg-"))
    try:
        if user is not None:
            os.chown(base, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        data = base / "data"
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                DB_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user,
        )
        last_error: Exception | None = None
        for _ in range(3):  # the free port may be taken between picking and binding: retry
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off"
                " -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                _run(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(base / "postgres.log"),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        options,
                        "start",
                    ],
                    user,
                    start_new_session=True,  # a Ctrl-C of ours must not reach the server first
                )
            except RuntimeError as e:
                log = base / "postgres.log"
                last_error = RuntimeError(f"{e}\n{log.read_text() if log.exists() else ''}")
                continue
            _run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, DB_NAME],
                user,
            )
            return _url(port), base
        raise last_error or RuntimeError("pg_ctl start failed")
    except BaseException:
        stop(base)
        raise


def restart(data: Path) -> None:
    """Restart the cluster of the data directory ``data`` with the options it runs with (a database
    restart as operators do one: fast shutdown, every connection ended)."""
    # The server's output to the cluster's log, as at start: an inherited pipe would never close.
    log = data.parent / "postgres.log"
    command = [str(find_bindir() / "pg_ctl"), "-D", str(data), "-l", str(log), "-m", "fast", "-w", "-t", "60"]
    _run([*command, "restart"], _os_user(), start_new_session=True)


def stop(base: Path) -> None:
    """Stop the cluster in `base` (if it runs) and remove `base`. Safe to call more than once."""
    data = base / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(Exception):
            bindir = find_bindir()
            _run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"],
                _os_user(),
            )
        pidfile = data / "postmaster.pid"
        if pidfile.exists():  # pg_ctl failed: kill the postmaster ourselves
            with contextlib.suppress(Exception):
                pid = int(pidfile.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                for _ in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
    shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Start a throwaway cluster, yield its URL, always stop it and remove its files."""
    url, base = start()
    try:
        yield url
    finally:
        stop(base)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run(cmd: list[str]) -> int:
    """Run `cmd` with INTYG_TEST_POSTGRES_URL pointing at a throwaway cluster; return its exit code."""
    if not cmd:
        raise SystemExit("usage: python -m tests.postgres run -- CMD [ARGS...]")
    if os.environ.get(ENV_URL):
        print(f"postgres: using {ENV_URL} from the environment", file=sys.stderr)
        return subprocess.call(cmd)
    try:
        find_bindir()
    except PostgresUnavailable as e:
        print(f"postgres: PostgreSQL tests will be SKIPPED: {e} (and {ENV_URL} is not set)", file=sys.stderr)
        return subprocess.call(cmd)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)
    began = time.monotonic()
    with throwaway_cluster() as url:
        print(
            f"postgres: throwaway cluster at {url} (started in {time.monotonic() - began:.1f}s)",
            file=sys.stderr,
        )
        child = subprocess.Popen(cmd, env={**os.environ, ENV_URL: url})
        try:
            return child.wait()
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"]:
        rest = argv[1:]
        return run(rest[1:] if rest[:1] == ["--"] else rest)
    if argv == ["start"]:
        url, base = start()
        print(f"export {ENV_URL}='{url}'\nexport INTYG_TEST_POSTGRES_DIR='{base}'")
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        stop(Path(argv[1]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # the cluster is already stopped and removed by now
        sys.exit(130)
