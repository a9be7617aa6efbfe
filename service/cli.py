"""The ``intygstjanst`` command: ``serve`` and ``migrate``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from service.config import Settings
from service.store import migration
from service.telemetry import configure_logging


def _multiprocess_metrics_dir() -> None:
    """Worker processes share their metrics through files (prometheus-client's multiprocess mode).
    The directory must be set before the workers start, and empty: old files would add old counts."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory is None:
        directory = tempfile.mkdtemp(prefix="intygstjanst-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    for stale in Path(directory).glob("*.db"):
        stale.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="intygstjanst", description="Intygstjänsten, the certificate store")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (metrics in multiprocess mode)"
    )
    commands.add_parser("migrate", help="bring the database schema to the newest version")
    token = commands.add_parser("dev-token", help="print a citizen token signed by the development key")
    token.add_argument("personnummer", help="the citizen the token names (12 digits)")
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(settings.log_level)
    if args.command == "migrate":
        migration.upgrade(settings.database_url)
        print("database schema is at the newest version")
        return 0

    if args.command == "dev-token":
        from service.errors import InvalidPersonId
        from service.model import PersonId
        from service.rest.auth import dev_token

        if settings.portal_key_configured:
            print("a portal key is configured: the service accepts no development tokens", file=sys.stderr)
            return 2
        try:
            print(dev_token(settings, PersonId.parse(args.personnummer)))
        except InvalidPersonId as exc:
            print(f"not a valid personnummer or samordningsnummer: {exc}", file=sys.stderr)
            return 2
        return 0

    import uvicorn

    if problems := settings.unfit_to_serve():
        for problem in problems:
            print(f"refusing to start with the production profile: {problem}", file=sys.stderr)
        return 2
    if settings.is_sqlite:
        # The embedded default needs no set-up: its schema is created or upgraded on start.
        migration.upgrade(settings.database_url)
    database = (
        "SQLite file " + settings.database_url.split("///", 1)[-1] if settings.is_sqlite else "PostgreSQL"
    )
    if not settings.portal_key_configured:
        logging.getLogger("service").warning(
            "DEVELOPMENT MODE: no portal key is configured (INTYG_PORTAL_JWKS_FILE or "
            "INTYG_PORTAL_PUBLIC_KEY_FILE), so the citizen API accepts tokens signed by the development "
            "key %s (`intygstjanst dev-token`). Never run like this in production.",
            settings.dev_key_file,
        )
    print(f"Intygstjänsten listening on http://{args.host}:{args.port} (database: {database})", flush=True)
    if args.workers > 1:
        _multiprocess_metrics_dir()
    uvicorn.run(
        "service.app:create_app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
