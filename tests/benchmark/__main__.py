"""``python -m tests.benchmark``: see ``tests/benchmark/__init__.py``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from service.config import Settings
from service.model import PersonId
from service.rest.auth import dev_token
from service.rest.routes import PREFIX
from service.store.crypto import KeyRing, encode_key
from service.store.unit_of_work import create_engine, dispose
from tests import server
from tests.benchmark import load, preload
from tests.benchmark.load import UNIQUE, Result, Workload, http_request
from tests.integration import soap as s
from tests.postgres import throwaway_cluster
from tests.reference import BUSINESS_RULES

ROOT = Path(__file__).resolve().parents[2]
CARE_GIVER = "SE2321000016-39KJ"
PATIENTS = 250  # in each pool: read and listed, registered for, status changed
PER_PATIENT = 4
READ_DAY, REGISTER_DAY, STATUS_DAY = 1, 2, 3  # each pool's patients are born on its day (preload.person)
# What a success holds: a changing call's resultCode OK, whatever its prefix (INFO or ERROR fail);
# a get or list's certificate of the read pool (gets and lists have no result code).
SOAP_OK = b">OK</"
LISTED = b"bench-read-"
RUN_STRIDE = 10**8  # counter values each run may use, so ids never repeat across runs


def _soap(operation: str, major: int, body: str) -> bytes:
    return _post(s.path_of(operation, major), s.envelope_for(operation, major, body))


def _register(certificate_id: str, patient: str) -> bytes:
    """The national service's own register request (a whole envelope)."""
    envelope = s.register_envelope(certificate_id, patient).encode()
    return _post(s.path_of("RegisterCertificate", 3), envelope)


def _post(path: str, envelope: bytes) -> bytes:
    return http_request("POST", path, body=envelope, headers={"Content-Type": "text/xml; charset=utf-8"})


def _pool(prefix: str, day: int) -> list[tuple[str, str]]:
    """(certificate id, patient) of a pool's certificates."""
    return [
        (f"bench-{prefix}-{p:03d}-{k}", preload.person(p, day))
        for p in range(PATIENTS)
        for k in range(PER_PATIENT)
    ]


READ = _pool("read", READ_DAY)
STATUS = _pool("status", STATUS_DAY)
READ_PATIENTS = [preload.person(p, READ_DAY) for p in range(PATIENTS)]


def register_workload(name: str = "SOAP RegisterCertificate 3") -> Workload:
    """A LISJP of the national service's own tests (the certificate its business rules check), new ids."""
    register_patients = [preload.person(p, REGISTER_DAY) for p in range(PATIENTS)]
    return Workload(name, [_register(f"bench-new-{UNIQUE.decode()}", p) for p in register_patients], SOAP_OK)


def operations(tokens: dict[str, str]) -> list[Workload]:
    """The measured operations (README "Benchmark"), each cycling through its pool."""

    def bearer(patient: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[patient]}"}

    return [
        Workload(
            "SOAP GetCertificate 2 (HSVARD)",
            [_soap("GetCertificate", 2, s.get_certificate(c, "HSVARD")) for c, _ in READ],
            LISTED,
        ),
        register_workload(),
        Workload(
            "SOAP ListCertificatesForCare 3",
            [
                _soap("ListCertificatesForCare", 3, s.list_for_care(p, care_giver=CARE_GIVER))
                for p in READ_PATIENTS
            ],
            LISTED,
        ),
        Workload(
            "SOAP ListCertificatesForCitizen 4",
            [_soap("ListCertificatesForCitizen", 4, s.list_for_citizen(p)) for p in READ_PATIENTS],
            LISTED,
        ),
        Workload(
            # A recipient records its delivery: each request appends a RECEIV event (1,000 certificates).
            "SOAP SetCertificateStatus 2",
            [_soap("SetCertificateStatus", 2, s.set_status(c, "FKASSA", "RECEIV")) for c, _ in STATUS],
            SOAP_OK,
        ),
        Workload(
            "REST GET certificate",
            [http_request("GET", f"{PREFIX}/certificates/{c}", headers=bearer(p)) for c, p in READ],
            LISTED,
        ),
        Workload(
            "REST GET certificates (list)",
            [http_request("GET", f"{PREFIX}/certificates", headers=bearer(p)) for p in READ_PATIENTS],
            LISTED,
        ),
    ]


HELLO = Workload("hello (bare FastAPI)", [http_request("GET", "/hello")], b'"hello"')


@dataclass
class Row:
    name: str
    full: Result
    half: Result
    hello: float  # the mean of the hello runs on either side
    statements: float | None


class Bench:
    """The two servers and the run settings; runs workloads and reads the service's metrics."""

    def __init__(self, args: argparse.Namespace, service: str, scrape: str, hello_port: int) -> None:
        self.args = args
        # The metrics port's /metrics: the service's port does not answer it.
        self.scrape = scrape
        self.service_port = int(service.rsplit(":", 1)[1])
        self.hello_port = hello_port
        self.runs = itertools.count(1)

    def full(self, port: int, work: Workload) -> Result:
        first = next(self.runs) * RUN_STRIDE
        return load.peak(
            port, work, seconds=self.args.seconds, connections=self.args.connections, first=first
        )

    def half(self, port: int, work: Workload, peak: float) -> Result:
        rate = peak / 2
        count = max(1, round(rate * self.args.seconds))
        first = next(self.runs) * RUN_STRIDE
        return load.paced(port, work, rate=rate, count=count, connections=self.args.connections, first=first)

    def once(self, work: Workload, count: int, connections: int = 16) -> None:
        """Each request at least once, as fast as it goes, every answer checked: the set-up, and the
        check (and warm-up) before an operation is timed."""
        first = next(self.runs) * RUN_STRIDE
        done = load.paced(
            self.service_port, work, rate=None, count=count, connections=connections, first=first
        )
        if done.failures:
            raise SystemExit(
                f"{work.name}: {done.failures} of {count} answers were not a success, as this one:\n"
                f"{done.failed_answer.decode(errors='replace')}"
            )

    def metrics(self) -> tuple[float, float | None]:
        """Requests in flight, and the request statements counted so far (None: no such counter yet)."""
        in_flight, statements = 0.0, None
        families = text_string_to_metric_families(httpx.get(self.scrape, timeout=10).text)
        for family in families:
            for sample in family.samples:
                if sample.name == "intyg_requests_in_flight":
                    in_flight += sample.value
                elif sample.name == "intyg_db_statements_total" and sample.labels.get("source") == "request":
                    statements = (statements or 0.0) + sample.value
        return in_flight, statements

    def seal_lag(self) -> dict[float, float]:
        """The audit seal lag histogram so far: records sealed within each bucket's bound (cumulative)."""
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(httpx.get(self.scrape, timeout=10).text):
            for sample in family.samples:
                if sample.name == "intyg_audit_seal_lag_seconds_bucket":
                    buckets[float(sample.labels["le"])] = sample.value
        return buckets

    def settled(self) -> float | None:
        """Waits until the requests a full-load run left behind are answered; the statement count."""
        deadline = time.monotonic() + 30
        while True:
            in_flight, statements = self.metrics()
            if in_flight == 0 or time.monotonic() > deadline:
                return statements
            time.sleep(0.1)

    def table(self, works: list[Workload]) -> tuple[list[Row], list[Result], Result, str]:
        """hello, op, hello, op, ..., hello at full load; each op also at half its peak."""
        lag_before = self.seal_lag()
        hellos = [self.full(self.hello_port, HELLO)]
        hello_half = self.half(self.hello_port, HELLO, hellos[0].rate)
        rows = []
        for work in works:
            self.once(work, 2 * self.args.connections, self.args.connections)
            full = self.full(self.service_port, work)
            before = self.settled()
            half = self.half(self.service_port, work, full.rate)
            after = self.settled()
            hellos.append(self.full(self.hello_port, HELLO))
            statements = None if before is None or after is None else (after - before) / half.requests
            rows.append(Row(work.name, full, half, (hellos[-2].rate + hellos[-1].rate) / 2, statements))
        return rows, hellos, hello_half, _seal_lag(lag_before, self.seal_lag())


def _seal_lag(before: dict[float, float], after: dict[float, float]) -> str:
    """The sealer keeps up at the peak (README "Audit log"). The p99 of the audit records sealed during the
    table's runs, as the histogram's bucket bound that holds it (an upper bound)."""
    sealed = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = sealed.get(float("inf"), 0.0)
    if not total:
        return "audit seal lag: no records sealed (no intyg_audit_seal_lag_seconds in this service)"
    p99 = next(le for le, count in sealed.items() if count >= 0.99 * total)
    return f"audit seal lag over these runs: p99 <= {p99:g} s ({total:,.0f} records sealed)"


def _ms(value: float) -> str:
    return f"{value:7.1f}" if value < 100 else f"{value:7.0f}"


def print_table(title: str, rows: list[Row], hellos: list[Result], hello_half: Result, seal_lag: str) -> None:
    rates = [hello.rate for hello in hellos]
    print(f"\n{title}")
    print(f"{'':34} {'---------- full load ----------':>31}   {'-- half of peak, open loop --':>29}")
    print(
        f"{'operation':34} {'req/s':>7} {'/hello':>7} {'p50 ms':>7} {'p99 ms':>7}   "
        f"{'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}   {'stmt/req':>8} {'failed':>6}"
    )
    print(
        f"{HELLO.name:34} {statistics.mean(rates):7.0f} {1:7.3f} "
        f"{_ms(statistics.median(h.p50_ms for h in hellos))} {_ms(statistics.median(h.p99_ms for h in hellos))}   "
        f"{hello_half.rate:7.0f} {_ms(hello_half.p50_ms)} {_ms(hello_half.p99_ms)}   {'-':>8} "
        f"{sum(h.failures for h in hellos) + hello_half.failures:6}"
    )
    for row in rows:
        statements = "n/a" if row.statements is None else f"{row.statements:.2f}"
        print(
            f"{row.name:34} {row.full.rate:7.0f} {row.full.rate / row.hello:7.3f} {_ms(row.full.p50_ms)} "
            f"{_ms(row.full.p99_ms)}   {row.half.rate:7.0f} {_ms(row.half.p50_ms)} {_ms(row.half.p99_ms)}   "
            f"{statements:>8} {row.full.failures + row.half.failures:6}"
        )
    print(
        f"(/hello: to the mean of the hello runs just before and after; hello's {len(rates)} runs: "
        f"{min(rates):.0f} to {max(rates):.0f} req/s, its p50/p99 their medians; "
        f"load average {os.getloadavg()[0]:.2f} at the end)"
    )
    print(seal_lag)


async def _query(url: str, statement: str) -> str:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return str((await connection.execute(text(statement))).scalar())
    finally:
        await dispose(engine)


def stored(url: str) -> int:
    return int(asyncio.run(_query(url, "SELECT count(*) FROM certificates")))


def set_up(bench: Bench, dev_key_file: Path) -> dict[str, str]:
    """The read and status pools registered, the read pool's citizens' consent given (ListCertificates-
    ForCitizen and the REST API need it, rule 2); their tokens."""
    started = time.monotonic()
    register = [_register(c, p) for c, p in READ + STATUS]
    bench.once(Workload("set-up: RegisterCertificate 3", register, SOAP_OK), len(register))
    consent = [_soap("SetConsent", 1, s.set_consent(p, True)) for p in READ_PATIENTS]
    bench.once(Workload("set-up: SetConsent 1", consent, SOAP_OK), len(consent))
    print(
        f"set-up: {len(register)} certificates registered, {PATIENTS} citizens' consent given "
        f"through SOAP in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    settings = Settings(dev_key_file=dev_key_file)
    return {p: dev_token(settings, PersonId.parse(p)) for p in READ_PATIENTS}


def grow(bench: Bench, url: str, keyring: KeyRing, count: int) -> None:
    started = time.monotonic()
    asyncio.run(_preload(url, keyring, count))
    seconds = time.monotonic() - started
    # The service reads what the preload stored (the first and the last), keys and all.
    reads = [
        _soap("GetCertificate", 2, s.get_certificate(preload.certificate_id(i), "HSVARD"))
        for i in (0, count - 1)
    ]
    bench.once(Workload("preload: GetCertificate 2", reads, b"preload-"), len(reads))
    print(
        f"\npreload: {count:,} certificates in {seconds:.0f} s ({count / seconds:.0f}/s): register requests "
        "read by the SOAP adapter, stored by the repository's add() with real encryption, its rows inserted "
        "in bulk; no audit records",
        flush=True,
    )


async def _preload(url: str, keyring: KeyRing, count: int) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        await preload.preload(engine, keyring, count)
    finally:
        await dispose(engine)


def _loop_and_http(pid: int) -> tuple[str, str]:
    """The event loop and HTTP parser a uvicorn process runs on: the extension modules it has loaded."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return ("uvloop" if "/uvloop/" in maps else "asyncio", "httptools" if "/httptools/" in maps else "h11")


@contextlib.contextmanager
def hello_server(loop: str, http: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = server.free_port()
    command = [
        sys.executable,
        "-m",
        "tests.benchmark.hello",
        f"--port={port}",
        f"--loop={loop}",
        f"--http={http}",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server.wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/hello").status_code == 200,
            30,
            "the hello app is ready",
        )
        yield port, process
    finally:
        server.stop(process)


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url is None:
        with throwaway_cluster() as throwaway:
            yield throwaway
        return
    url = Settings(database_url=url).database_url
    if not url.startswith("postgresql"):
        raise SystemExit("the benchmark runs on PostgreSQL only")
    yield url


def _context(url: str, throwaway: bool) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.machine(),
    )
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split(" [")[0]
    database = asyncio.run(_query(url, "SHOW server_version"))
    return (
        f"commit {commit.stdout.strip() or 'unknown'}, {dt.datetime.now():%Y-%m-%d %H:%M}\n"
        f"machine: {os.cpu_count()} cores, {cpu}; load average {os.getloadavg()[0]:.2f} at the start\n"
        f"Python {platform.python_version()}, FastAPI {version('fastapi')}, uvicorn {version('uvicorn')}, "
        f"SQLAlchemy {version('sqlalchemy')}, psycopg {version('psycopg')}, {wrk}; PostgreSQL {database}"
        + (" (throwaway cluster: fsync and synchronous_commit off)" if throwaway else "")
    )


def without_rules(
    args: argparse.Namespace, workdir: Path, env: dict[str, str], hello_port: int, url: str
) -> None:
    """Register again on a second service of the same database without the business rules, between hello
    runs as in the tables: what checking a certificate against its type's rules costs (README "Certificate
    types")."""
    plain = {k: v for k, v in env.items() if k != "INTYG_BUSINESS_RULES_DIR"}
    plain["INTYG_METRICS_PORT"] = str(server.free_port())
    with server.running(workdir, env=plain) as (service, _process):
        bench = Bench(args, service, f"http://127.0.0.1:{plain['INTYG_METRICS_PORT']}/metrics", hello_port)
        rows, hellos, hello_half, lag = bench.table(
            [register_workload("SOAP RegisterCertificate 3, no rules")]
        )
        print_table(
            f"The same store ({stored(url):,} certificates), registers WITHOUT the business rules",
            rows,
            hellos,
            hello_half,
            lag,
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark", description=__doc__)
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--seconds", type=float, default=5, help="each full-load and half-load run")
    parser.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    parser.add_argument(
        "--preload", type=int, default=100_000, help="certificates added for the second table"
    )
    parser.add_argument(
        "--business-rules",
        type=Path,
        default=BUSINESS_RULES if BUSINESS_RULES.is_dir() else None,
        help="the national Schematron rule set the service checks registers with (default: ../shared's, "
        "where present); register is measured without them too",
    )
    args = parser.parse_args()
    if not 1 <= args.seconds <= 60 or not 1 <= args.connections <= 256 or not 0 <= args.preload <= 1_000_000:
        parser.error("--seconds 1-60, --connections 1-256, --preload 0-1,000,000")
    if missing := load.wrk_missing():
        raise SystemExit(missing)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # stop what was started, as on Ctrl-C
        signal.signal(sig, lambda signum, _: sys.exit(128 + signum))

    began = time.monotonic()
    keyring = KeyRing("bench", {"bench": os.urandom(32)}, os.urandom(32))
    with tempfile.TemporaryDirectory() as workdir, database(args.database_url) as url:
        env = {
            "INTYG_DATABASE_URL": url,
            "INTYG_LOG_LEVEL": "WARNING",
            # Fresh keys of encryption at rest for this run (PostgreSQL gets no generated development keys).
            "INTYG_KEK": f"bench:{encode_key(keyring.keks['bench'])}",
            "INTYG_LOOKUP_KEY": encode_key(keyring.lookup_key),
            "INTYG_DEV_KEY_FILE": str(Path(workdir) / "dev-portal-key.json"),
            "INTYG_METRICS_PORT": str(server.free_port()),
        }
        if args.business_rules is not None:
            env["INTYG_BUSINESS_RULES_DIR"] = str(args.business_rules)
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("INTYG_", "PROMETHEUS_"))}
        subprocess.run(
            [str(server.INTYGSTJANST), "migrate"], env={**clean, **env}, check=True, capture_output=True
        )
        if stored(url):  # a database of its own: it counts and lists what it registers
            raise SystemExit("--database-url: the benchmark needs an empty database")
        print(_context(url, args.database_url is None), flush=True)
        with server.running(Path(workdir), env=env) as (service, process):
            loop, http = _loop_and_http(process.pid)
            with hello_server(loop, http) as (hello_port, hello_process):
                if _loop_and_http(hello_process.pid) != (loop, http):
                    print(
                        f"WARNING: hello runs on {_loop_and_http(hello_process.pid)}, serve on {loop, http}"
                    )
                print(
                    f"serve: 1 worker, {loop} loop, {http} parser; hello: the same. Full load: wrk, "
                    f"{args.connections} connections, {args.seconds:g} s; half load: open loop at half the "
                    f"peak for {args.seconds:g} s ({load.client_loop()} client), latency from the scheduled send",
                    flush=True,
                )
                scrape = f"http://127.0.0.1:{env['INTYG_METRICS_PORT']}/metrics"
                bench = Bench(args, service, scrape, hello_port)
                works = operations(set_up(bench, Path(env["INTYG_DEV_KEY_FILE"])))
                rules = "with" if args.business_rules else "WITHOUT"
                print_table(
                    f"Small store: {stored(url):,} certificates; registers checked {rules} the business rules",
                    *bench.table(works),
                )
                if args.business_rules:
                    without_rules(args, Path(workdir), env, hello_port, url)
                if args.preload:
                    grow(bench, url, keyring, args.preload)
                    print_table(f"Large store: {stored(url):,} certificates", *bench.table(works))
    print(f"\ntotal {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # every process it started is stopped by now
        sys.exit(130)
