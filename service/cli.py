"""The ``intygstjanst`` command: ``serve``, ``migrate``, ``rotate-kek``, ``export-care-giver``,
``verify-export``, ``erase-care-giver``, ``verify-audit``, ``dev-token``, ``relay`` and ``outbox``, one
function each.

Every command answers what an operator can get wrong or meet (settings that do not validate, a file or
key they name that cannot be used, a store that cannot be reached, stored data that cannot be read)
with one line on stderr, never a traceback (``_answering``). Exit codes, for every command:

- 0: done;
- 1: done, with something left for the operator: ``rotate-kek``, data keys remain under another KEK
  (run it again); ``verify-audit``, the audit log is not intact; ``verify-export``, the export is not;
  ``outbox``, events were given up on (dead-lettered; ``--retry-dead`` puts them back);
- 2: refused, for the reason on the one line;
- 3: ``serve`` only, the server failed to start (uvicorn's own ``STARTUP_FAILURE``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, get_args

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from service import handover, loader, operations
from service.config import InvalidSettings, LogFormat, Settings, from_environment
from service.errors import InvalidPersonId, StoredDataUnreadable, StoreUnavailable
from service.model import Caller, CallerKind, Channel, PersonId, StaffId
from service.store import migration, outbox, rotation
from service.store.crypto import KeyRing
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from service.telemetry import configure_logging, writes_text

DONE, NOT_ALL, REFUSED = 0, 1, 2
T = TypeVar("T")


def _multiprocess_metrics_dir() -> None:
    """Worker processes share their metrics through files (prometheus-client's multiprocess mode).
    The directory must be set before the workers start, and empty: old files would add old counts."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory is None:
        directory = tempfile.mkdtemp(prefix="intygstjanst-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    for stale in Path(directory).glob("*.db"):
        stale.unlink()


# HSA ids, as the contracts carry them; the operator's too, or any id the organisation gives them.
_HSA_LIKE = re.compile(r"[!-~]{1,128}")


def _first_line(exc: BaseException) -> str:
    # The driver's first line names the cause; PostgreSQL's next lines would quote the SQL.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    reason = str(cause).strip()
    return reason.splitlines()[0] if reason else type(cause).__name__


def _answering(command: Callable[[Settings, argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Runs ``command`` on the environment's settings. What an operator can get wrong or meet becomes one
    line on stderr and exit 2; anything else is a fault of ours, and keeps its traceback."""
    try:
        settings = from_environment()
        if args.log_format is not None:
            settings = settings.model_copy(update={"log_format": args.log_format})
        configure_logging(settings)
        return command(settings, args)
    except (InvalidSettings, loader.Unusable) as exc:
        reason = str(exc)
    except StoredDataUnreadable as exc:
        reason = f"{args.command} stopped: {exc}"
    except (StoreUnavailable, DBAPIError, psycopg.Error, OSError) as exc:
        # psycopg's own: the units of work on PostgreSQL; OSError: a socket or file of the store.
        reason = f"cannot reach the store: {_first_line(exc)}"
    refusing = "refusing to start: " if args.command == "serve" else ""
    print(refusing + reason, file=sys.stderr)
    return REFUSED


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    try:
        migration.upgrade(settings.database_url, keyring=loader.migration_keyring(settings))
    except RuntimeError as exc:  # a migration that cannot convert the stored rows says why
        print(f"migration stopped: {exc}", file=sys.stderr)
        return REFUSED
    print("database schema is at the newest version")
    return DONE


async def _rotate(settings: Settings, keyring: KeyRing, batch_size: int) -> rotation.Rotation:
    engine = create_engine(settings.database_url, pool_size=1, timeouts=settings.database_timeouts())
    try:
        return await rotation.rotate(engine, keyring, batch_size=batch_size)
    finally:
        await dispose(engine)


def _rotate_kek(settings: Settings, args: argparse.Namespace) -> int:
    """README.md, "Rotating the KEK", step 3."""
    keyring = loader.keyring(settings)
    done = asyncio.run(_rotate(settings, keyring, args.batch_size))
    print(
        f"re-wrapped {done.rewrapped} data keys under the current KEK {keyring.current!r}; "
        f"{done.remaining} remain under other KEKs"
    )
    if done.remaining:
        # Written meanwhile by an instance that does not have the new KEK as current yet.
        print("run rotate-kek again once every instance runs with the new KEK as current", file=sys.stderr)
        return NOT_ALL
    return DONE


def _operator_caller(care_giver_id: str, operator: str) -> Caller:
    # The operator acts for no care system: the audit names them and the care giver erased or exported.
    return Caller(
        CallerKind.OPERATOR,
        Channel.CLI,
        "intygstjanst-cli",
        professional=_operator(operator),
        care_giver_id=care_giver_id,
    )


async def _on_the_store(
    settings: Settings, keyring: KeyRing, run: Callable[[Callable[[], SqlUnitOfWork]], Awaitable[T]]
) -> T:
    """``run`` with units of work on the store, each its own short transaction."""
    engine = create_engine(settings.database_url, pool_size=1, timeouts=settings.database_timeouts())

    def units() -> SqlUnitOfWork:
        # Its audit records are written unsealed, as a request's are: the service's sealer chains them.
        return SqlUnitOfWork(engine, keyring, deadline=settings.db_deadline_seconds)

    try:
        return await run(units)
    finally:
        await dispose(engine)


def _operator(given: str) -> StaffId | PersonId:
    """The operator as the command names them; a personal identity number is typed as one, so that
    the audit trail stores it as a keyed hash, never in the clear."""
    try:
        return PersonId.parse(given)
    except InvalidPersonId:
        return StaffId(given)


def _ids_refused(care_giver_id: str, operator: str) -> bool:
    if _HSA_LIKE.fullmatch(care_giver_id) and _HSA_LIKE.fullmatch(operator):
        return False
    print("the care giver and the operator are ids of 1 to 128 printable characters", file=sys.stderr)
    return True


def _verified_export(settings: Settings, directory: Path) -> handover.Export:
    """The export in ``directory``, checked with the audit log's public keys (``handover.verify``)."""
    keys = loader.audit_verify_keys(settings)
    if not keys:
        raise handover.NotIntact("no key to check it with: set INTYG_AUDIT_VERIFY_KEYS_FILE (public keys)")
    return handover.verify(directory, keys)


def _erase_care_giver(settings: Settings, args: argparse.Namespace) -> int:
    """DOMAIN.md, who calls what: an operator erases a care giver's copies at the end of its contract
    (rule 5 for each), those of a verified export (``--export``) or, on their word, all
    (``--without-export``): README.md, "Hand-over before erasure". Without --yes it only says how many
    it would remove."""
    care_giver_id, operator = args.care_giver, args.operator
    if _ids_refused(care_giver_id, operator):
        return REFUSED
    export = None
    if args.export is not None:
        try:
            export = _verified_export(settings, args.export)
        except handover.NotIntact as exc:
            print(f"refusing to erase: the export in {args.export} is NOT intact: {exc}", file=sys.stderr)
            return REFUSED
        if export.care_giver_id != care_giver_id:
            print(
                f"refusing to erase: the export in {args.export} is of another care giver "
                f"({export.care_giver_id})",
                file=sys.stderr,
            )
            return REFUSED
    keyring = loader.keyring(settings)
    if not args.yes:
        found = asyncio.run(
            _on_the_store(
                settings,
                keyring,
                lambda units: operations.count_care_copies(units, care_giver_id=care_giver_id),
            )
        )
        held = "" if export is None else f"; the export holds {len(export.certificates)}, intact"
        print(
            f"{found} care copies of {care_giver_id} would be removed{held}; nothing changed (run with --yes)"
        )
        return DONE
    if export is None and not args.without_export:
        print(
            f"refusing to erase: give --export DIR, a verified export of {care_giver_id} (export-care-giver), "
            "or --without-export to erase its copies without one",
            file=sys.stderr,
        )
        return REFUSED
    done = asyncio.run(
        _on_the_store(
            settings,
            keyring,
            lambda units: operations.erase_care_giver(
                units,
                care_giver_id=care_giver_id,
                handed_over=None if export is None else export.certificates,
                caller=_operator_caller(care_giver_id, operator),
                clock=settings.clock(),
            ),
        )
    )
    stayed = ""
    if export is not None:
        stayed = (
            f"; {done.not_exported} not in the export and {done.changed_since_export} changed since it "
            "stay (export again to hand them over)"
        )
    print(
        f"removed {done.kept_for_citizens + done.deleted} care copies of {care_giver_id}: "
        f"{done.kept_for_citizens} kept for citizens with consent, {done.deleted} deleted permanently{stayed}"
    )
    return DONE


def _export_care_giver(settings: Settings, args: argparse.Namespace) -> int:
    """README.md, "Hand-over before erasure": every copy the care giver keeps, with its metadata and status
    history, into a new directory, with a manifest signed by the audit signing key. An export that cannot
    finish is removed, and says why."""
    care_giver_id, operator = args.care_giver, args.operator
    if _ids_refused(care_giver_id, operator):
        return REFUSED
    keyring = loader.keyring(settings)
    signer = loader.audit_signer(settings)
    clock = settings.clock()
    try:
        writer = handover.Writer(args.out)
    except handover.Unwritable as exc:
        print(f"refusing to export: {exc}", file=sys.stderr)
        return REFUSED
    try:
        started = clock()
        asyncio.run(
            _on_the_store(
                settings,
                keyring,
                lambda units: operations.export_care_giver(
                    units,
                    care_giver_id=care_giver_id,
                    sink=writer,
                    caller=_operator_caller(care_giver_id, operator),
                    clock=clock,
                ),
            )
        )
        set_sha256 = writer.finish(
            care_giver_id=care_giver_id, started_at=started, finished_at=clock(), signer=signer
        )
    except handover.Unwritable as exc:
        writer.discard()
        print(f"export stopped, nothing of it is left: {exc}", file=sys.stderr)
        return REFUSED
    except BaseException:
        writer.discard()  # the store's failure is told by _answering
        raise
    print(
        f"exported {writer.count} certificates of {care_giver_id} to {args.out}; "
        f"set SHA-256 {set_sha256}, signed by key {signer.key_id}"
    )
    return DONE


def _verify_export(settings: Settings, args: argparse.Namespace) -> int:
    """README.md, "Hand-over before erasure": one line, the verdict on an export. Exit 0 intact, 1 not."""
    try:
        export = _verified_export(settings, args.directory)
    except handover.NotIntact as exc:
        print(f"export NOT intact: {exc}")
        return NOT_ALL
    print(
        f"export intact: {len(export.certificates)} certificates of {export.care_giver_id}, exported "
        f"{export.started_at.isoformat()} to {export.finished_at.isoformat()}, signed by key {export.key_id}; "
        f"set SHA-256 {export.set_sha256}"
    )
    return DONE


def _verify_audit(settings: Settings, args: argparse.Namespace) -> int:
    """README.md, "Audit log": one line, the verdict on the whole audit chain. It names places, never a
    record's content (records hold identities). Exit 0 intact, 1 not intact, 2 nothing to check with."""
    from service.store import audit_verification

    keys = loader.audit_verify_keys(settings)
    checkpoint_log: Path | None = args.checkpoint_log
    try:
        logged = audit_verification.logged_checkpoints(checkpoint_log) if checkpoint_log else []
    except OSError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return REFUSED
    except ValueError as exc:
        print(f"unusable checkpoint log: {exc}", file=sys.stderr)
        return REFUSED
    if not keys:
        print(
            "no key to check the audit checkpoints with: set INTYG_AUDIT_VERIFY_KEYS_FILE (public keys)",
            file=sys.stderr,
        )
        return REFUSED
    started = time.perf_counter()
    try:
        verdict = audit_verification.verify_database(settings.database_url, keys, logged=logged)
    except DBAPIError as exc:  # no such database, or not migrated
        print(f"cannot read the audit log: {_first_line(exc)}", file=sys.stderr)
        return REFUSED
    elapsed = time.perf_counter() - started
    if verdict.problem is not None:
        print(f"audit log NOT intact: {verdict.problem.message}")
        return NOT_ALL
    # Records not sealed yet are protected by nothing but their form (README.md, "The tamper-evidence
    # window"): say how many and how long the oldest has waited (the sealer's lag), on the same line.
    tail = f"unsealed tail: {verdict.unsealed} records"
    if verdict.oldest_unsealed is not None:
        now = settings.clock()()
        tail += f", the oldest {max(0.0, (now - verdict.oldest_unsealed).total_seconds()):.1f} s old, each well-formed"
    print(
        f"audit log intact: {verdict.records} records, {verdict.checkpoints} checkpoints, "
        f"verified in {elapsed:.2f} s ({verdict.records / max(elapsed, 1e-9):.0f} records/s); {tail}"
    )
    return DONE


async def _relaying(settings: Settings, keyring: KeyRing, recipients: list[str]) -> None:
    from service.app import relay

    engine = create_engine(settings.database_url, pool_size=2, timeouts=settings.database_timeouts())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for stopping in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stopping, stop.set)
    try:
        await relay(settings, engine, keyring, recipients).run(stop)
    finally:
        await dispose(engine)


def _relay(settings: Settings, args: argparse.Namespace) -> int:
    """README.md, "Recipients and statistics": the outbox relay on its own, until SIGTERM or SIGINT (the
    service runs one in its lifespan too; one of them is elected)."""
    if settings.broker_url is None:
        print("no broker is configured (INTYG_BROKER_URL): there is nothing to relay to", file=sys.stderr)
        return REFUSED
    keyring = loader.keyring(settings)
    recipients = list(loader.recipients(settings))
    print(
        f"relaying the outbox to the broker's exchange {settings.broker_exchange!r} until stopped", flush=True
    )
    asyncio.run(_relaying(settings, keyring, recipients))
    return DONE


async def _look_at_outbox(
    settings: Settings, retry_dead: bool
) -> tuple[outbox.Backlog, list[outbox.DeadEvent], int]:
    engine = create_engine(settings.database_url, pool_size=1, timeouts=settings.database_timeouts())
    try:
        revived = await outbox.retry_dead(engine) if retry_dead else 0
        async with engine.connect() as connection:
            found = await outbox.backlog(connection)
            dead = await outbox.dead_events(connection)
        return found, dead, revived
    finally:
        await dispose(engine)


def _outbox(settings: Settings, args: argparse.Namespace) -> int:
    """README.md, "Recipients and statistics": what waits in the outbox, by destination and kind, and the
    events given up on with why. It names message ids, never a certificate or a person, so it reads no
    personal data and is not audited. Exit 1 where dead-lettered events remain."""
    found, dead, revived = asyncio.run(_look_at_outbox(settings, args.retry_dead))
    if revived:
        print(f"put {revived} dead-lettered events back in the outbox")
    waiting = sum(found.pending.values())
    oldest = ""
    if found.oldest is not None:
        oldest = (
            f", the oldest written {max(0.0, (settings.clock()() - found.oldest).total_seconds()):.0f} s ago"
        )
    print(f"outbox: {waiting} events wait to be published{oldest}; {len(dead)} dead-lettered")
    if settings.broker_url is None:
        print("no broker is configured (INTYG_BROKER_URL): no relay publishes them")
    for (destination, kind), count in sorted(found.pending.items()):
        print(f"  {destination:<12} {kind.value:<11} {count}")
    if dead:
        print("dead-lettered (put back with --retry-dead):")
    for event in dead:
        print(
            f"  {event.message_id} {event.destination} {event.kind.value}, given up on at "
            f"{event.dead_at.isoformat(sep=' ', timespec='seconds')} after {event.attempts} attempts: "
            f"{event.reason}"
        )
    return NOT_ALL if dead else DONE


def _dev_token(settings: Settings, args: argparse.Namespace) -> int:
    from service.rest.auth import dev_token

    if settings.portal_key_configured:
        print("a portal key is configured: the service accepts no development tokens", file=sys.stderr)
        return REFUSED
    try:
        print(dev_token(settings, PersonId.parse(args.personnummer)))
    except InvalidPersonId as exc:
        print(f"not a valid personnummer or samordningsnummer: {exc}", file=sys.stderr)
        return REFUSED
    return DONE


def _create_private(path: str | None) -> None:
    """A new SQLite file is made readable by its owner only, as the keys beside it are: it holds the
    audit log and the encrypted certificates (README.md, "Data at rest"). SQLite gives its WAL and
    shared-memory files the database file's mode; an existing file keeps the mode its operator gave it."""
    if not path or path == ":memory:":
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _warn_development(settings: Settings) -> None:
    """Say loudly which development defaults are in use (README.md, "Security")."""
    log = logging.getLogger("service")
    if not settings.portal_key_configured:
        log.warning(
            "DEVELOPMENT MODE: no portal key is configured (INTYG_PORTAL_JWKS_FILE or "
            "INTYG_PORTAL_PUBLIC_KEY_FILE), so the citizen API accepts tokens signed by the development "
            "key %s (`intygstjanst dev-token`). Never run like this in production.",
            settings.dev_key_file,
        )
    if not settings.keys_configured:
        log.warning(
            "DEVELOPMENT MODE: no keys of encryption at rest are configured (INTYG_KEYS_FILE, or "
            "INTYG_KEK with INTYG_LOOKUP_KEY), so the certificates are encrypted under the generated keys "
            "in %s. Without that file the stored certificates cannot be read.",
            settings.dev_keys_file,
        )
    if settings.business_rules_dir is None:
        log.warning(
            "DEVELOPMENT MODE: no business rules are configured (INTYG_BUSINESS_RULES_DIR, the national "
            "Schematron rule set), so registered certificates are checked for their type and version only, "
            "not against their type's rules. Never run like this in production."
        )
    if not settings.identifies_callers:
        log.warning(
            "DEVELOPMENT MODE: no client CA bundle and permission table are configured "
            "(INTYG_TLS_CLIENT_CA_FILE, INTYG_PERMISSIONS_FILE), so the service speaks plain HTTP on "
            "loopback only and every SOAP caller is the development consumer, allowed every operation "
            "for every care giver. Never run like this in production."
        )


def _served(settings: Settings) -> dict[str, Any]:
    """uvicorn's protocol settings: the event loop, the HTTP parser bounding slow clients, and TLS."""
    from service import connection, tls

    limits = connection.Limits(
        header_deadline=settings.header_deadline_seconds, max_connections=settings.max_connections
    )
    served: dict[str, Any] = {
        # uvicorn's "auto" is already the fast pair where it is importable: uvloop for the event loop and
        # httptools for the HTTP parser (both are dependencies; uvloop has no Windows build), else asyncio
        # and h11 (uvicorn 0.54: loops/auto.py, protocols/http/auto.py). Named here so that it shows.
        "loop": "auto",
        # The same auto choice of parser, bounding slow and silent clients (service/connection.py). A
        # partial of a class: uvicorn calls it to make each connection's protocol, workers unpickle it.
        "http": functools.partial(connection.BoundedProtocol, limits=limits),
    }
    if settings.tls_cert_file and settings.tls_key_file and settings.tls_client_ca_file:
        served |= {
            # A partial of a module function: worker processes unpickle it.
            "ssl_context_factory": functools.partial(
                tls.context_factory,
                settings.tls_cert_file,
                settings.tls_key_file,
                settings.tls_client_ca_file,
            ),
            # The same, subclassed to hand the app the client's certificate.
            "http": functools.partial(tls.ClientCertificateProtocol, limits=limits),
        }
    return served


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from service import connection, metrics
    from service.app import create_app

    if problems := settings.unfit_to_serve(host=args.host, port=args.port):
        for problem in problems:
            print(f"refusing to start ({settings.profile} profile): {problem}", file=sys.stderr)
        return REFUSED
    # Every file the settings name, read once now: a missing or malformed one stops the start with its
    # reason, rather than a traceback from every worker (and the development keys are made before they
    # start). One worker is given the app built from them; several each load their own.
    loaded = loader.load(settings)
    loader.tls_server_context(settings)
    if settings.is_sqlite:
        # The embedded default needs no set-up: its schema is created or upgraded on start.
        _create_private(make_url(settings.database_url).database)
        migration.upgrade(settings.database_url, keyring=loaded.keyring)
    database = (
        "SQLite file " + settings.database_url.split("///", 1)[-1] if settings.is_sqlite else "PostgreSQL"
    )
    _warn_development(settings)
    served = _served(settings)
    scheme = "https" if "ssl_context_factory" in served else "http"
    if args.workers > 1:
        _multiprocess_metrics_dir()
        # Each worker reads its settings from the environment: the format chosen here (the option, or
        # what "auto" found) is theirs too.
        os.environ["INTYG_LOG_FORMAT"] = "text" if writes_text(settings, sys.stdout) else "json"
    try:
        # Here, once, before uvicorn starts its workers: see metrics.serve for why not in each worker.
        # Plain HTTP also where the API speaks TLS: the metrics are aggregate counters with closed label
        # sets (no request content), the port is for Prometheus alone (the Helm chart's NetworkPolicy),
        # and prometheus-client's server would do each TLS handshake on its one accepting thread.
        metrics.serve(args.host, settings.metrics_port)
    except OSError as exc:
        print(
            f"refusing to start: cannot serve the metrics on {args.host}:{settings.metrics_port} "
            f"(INTYG_METRICS_PORT): {exc.strerror or exc}",
            file=sys.stderr,
        )
        return REFUSED
    print(
        f"Intygstjänsten listening on {scheme}://{args.host}:{args.port} (database: {database}); "
        f"metrics on http://{args.host}:{settings.metrics_port}/metrics",
        flush=True,
    )
    several = args.workers > 1
    config = uvicorn.Config(
        "service.app:create_app_from_environment" if several else create_app(settings, loaded),
        factory=several,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        # No "server: uvicorn": what the service runs on is nobody's business outside it (README.md,
        # "Security").
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        # The client's address is the connection's: callers are identified by certificate, and a
        # forwarded certificate is honoured from INTYG_TRUSTED_PROXIES only, never from a header's
        # claim of where a request came from.
        proxy_headers=False,
        **served,
    )
    # What uvicorn.run does, with uvicorn's supervisor of several workers replaced by ours, which closes
    # the listening socket as the drain begins (service/connection.py).
    if several:
        connection.Supervisor(config, sockets=[config.bind_socket()]).run()
        return DONE
    one = uvicorn.Server(config)
    # uvicorn re-raises the signal it stopped on once it has shut down: SIGINT as KeyboardInterrupt.
    with contextlib.suppress(KeyboardInterrupt):
        one.run()
    return DONE if one.started else STARTUP_FAILURE


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": _serve,
    "migrate": _migrate,
    "rotate-kek": _rotate_kek,
    "export-care-giver": _export_care_giver,
    "verify-export": _verify_export,
    "erase-care-giver": _erase_care_giver,
    "verify-audit": _verify_audit,
    "dev-token": _dev_token,
    "relay": _relay,
    "outbox": _outbox,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intygstjanst", description="Intygstjänsten, the certificate store")
    # Every command takes it, after its name: `intygstjanst serve --log-format text`.
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument(
        "--log-format",
        choices=get_args(LogFormat),
        help="json lines, or text lines for a person (default: INTYG_LOG_FORMAT, else auto: text on a "
        "terminal outside the production profile)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_parser = functools.partial(commands.add_parser, parents=[logs])
    serve = add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (metrics in multiprocess mode)"
    )
    add_parser("migrate", help="bring the database schema to the newest version")
    rotate = add_parser(
        "rotate-kek", help="re-wrap every data key under the current key-encryption key, while serving"
    )
    rotate.add_argument(
        "--batch-size", type=int, default=rotation.BATCH, help="data keys per (short) transaction"
    )
    erase = add_parser(
        "erase-care-giver", help="remove every copy a care giver keeps (contract end; rule 5 for each)"
    )
    erase.add_argument("care_giver", help="the care giver's HSA id")
    erase.add_argument("--operator", required=True, help="who erases: named in every audit record")
    erase.add_argument("--yes", action="store_true", help="erase; without it, only count what would go")
    handed = erase.add_mutually_exclusive_group()
    handed.add_argument(
        "--export", type=Path, help="erase only the certificates of this verified export, if unchanged since"
    )
    handed.add_argument(
        "--without-export",
        action="store_true",
        help="erase every copy without a verified export: the operator answers for the hand-over",
    )
    export = add_parser(
        "export-care-giver", help="write every copy a care giver keeps, with a signed manifest (hand-over)"
    )
    export.add_argument("care_giver", help="the care giver's HSA id")
    export.add_argument("--operator", required=True, help="who exports: named in every audit record")
    export.add_argument("--out", type=Path, required=True, help="a new or empty directory (made 0700)")
    verify = add_parser("verify-export", help="check an export's signature and every file's hash")
    verify.add_argument("directory", type=Path, help="the export's directory")
    token = add_parser("dev-token", help="print a citizen token signed by the development key")
    token.add_argument("personnummer", help="the citizen the token names (12 digits)")
    audit = add_parser(
        "verify-audit", help="check the audit log's hash chain and signed checkpoints (read-only)"
    )
    audit.add_argument(
        "--checkpoint-log",
        type=Path,
        help="a copy of the service's JSON log: its checkpoint events are checked too",
    )
    add_parser("relay", help="publish the outbox to the broker (INTYG_BROKER_URL) until stopped")
    waiting = add_parser(
        "outbox", help="what waits to be published, and the events given up on (dead-lettered)"
    )
    waiting.add_argument(
        "--retry-dead", action="store_true", help="put the dead-lettered events back, to be published again"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _answering(COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
