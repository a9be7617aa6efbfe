"""The ``intygstjanst`` command: ``serve`` and ``migrate``."""

from __future__ import annotations

import argparse
import logging
import sys

from service.config import Settings
from service.store import migration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="intygstjanst", description="Intygstjänsten, the certificate store")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8080)
    commands.add_parser("migrate", help="bring the database schema to the newest version")
    token = commands.add_parser("dev-token", help="print a citizen token signed by the development key")
    token.add_argument("personnummer", help="the citizen the token names (12 digits)")
    args = parser.parse_args(argv)

    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
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

    from service.app import create_app

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
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=settings.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main())
