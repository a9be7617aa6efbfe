"""Request telemetry: one log event and the RED metrics for every request, with a request id; and the
log's one handler, writing JSON lines or, for a person at a terminal, text lines (``configure_logging``).

The ASGI middleware names each request by its operation (the SOAP contract, or the REST route
template: never a path with an id in it), its channel and its outcome. The SOAP endpoint leaves its
business outcome (ok, info, an errorId, fault) in the request state; REST outcomes follow the status.
Log lines carry no request content: no identity number and no document text can reach them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Final, TextIO

from prometheus_client import Counter, Histogram
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.config import Settings

REQUEST_ID: Final = contextvars.ContextVar("request_id", default="")
_SAFE_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_UNROUTED: Final = "unrouted"
# Probes are not traffic: they would drown the dashboards' request rates. (Scrapes go to the metrics
# port, metrics.serve, which this app does not serve.)
_UNMEASURED: Final = frozenset({"/livez", "/readyz"})

log = logging.getLogger("service.request")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per record: time, level, logger, message, request id and the record's extras."""
    formatter = JsonFormatter(
        "{asctime}{levelname}{name}{message}",
        style="{",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )
    return formatter


# What every record has: the rest are a record's extras, which both formats write; but for uvicorn's
# copy of its message with escape codes in it, which text lines leave out.
_NOT_EXTRAS: Final = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
}
_RESET: Final = "\033[0m"
# The development warnings (``serve``'s DEVELOPMENT MODE and NO BROKER lines) must not scroll by unseen.
_COLOURS: Final = {logging.WARNING: "\033[1;33m", logging.ERROR: "\033[1;31m", logging.CRITICAL: "\033[1;31m"}


class TextFormatter(logging.Formatter):
    """One short line per record for a person at a terminal: time, level, logger, message, then the
    record's extras and the request id as ``key=value``. With ``colour``, warnings and errors are bold
    and coloured (ANSI), for a terminal only: escape codes in a file are noise."""

    def __init__(self, *, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        time_of_day = f"{self.formatTime(record, '%H:%M:%S')}.{int(record.msecs):03d}"
        extras = {k: v for k, v in vars(record).items() if k not in _NOT_EXTRAS}
        if request_id := getattr(record, "request_id", ""):
            extras["request_id"] = request_id
        fields = "".join(f" {key}={_shown(value)}" for key, value in extras.items())
        text = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        colour = _COLOURS.get(record.levelno) if self.colour else None
        line = f"{time_of_day} {colour}{text}{_RESET}{fields}" if colour else f"{time_of_day} {text}{fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _shown(value: object) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or any(c.isspace() for c in text) else text


def writes_text(settings: Settings, stream: TextIO) -> bool:
    """Whether the log is written as text (README.md, "Logs"): asked for, or "auto" on a terminal outside
    the production profile. A pipe, a file and a container's log are JSON, for the collector."""
    if settings.log_format != "auto":
        return settings.log_format == "text"
    return settings.profile != "production" and stream.isatty()


def configure_logging(settings: Settings) -> None:
    """Every log record, the service's, uvicorn's and alembic's alike, goes through one handler on stdout,
    with the request id: JSON lines, or text lines for a person (``writes_text``)."""
    handler = logging.StreamHandler(sys.stdout)
    if writes_text(settings, sys.stdout):
        handler.setFormatter(TextFormatter(colour=sys.stdout.isatty()))
    else:
        handler.setFormatter(json_formatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # The access log would print paths, which hold certificate ids; the request event replaces it.
    logging.getLogger("uvicorn.access").disabled = True
    # psycopg's pool tells every checkout and return at INFO; what it warns of (a connection discarded,
    # a failed reconnect) is kept.
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


# The project's folder: a fault is placed in the project's code that met it, not in a library's.
_PROJECT: Final = Path(__file__).resolve().parent.parent


def log_unforeseen(logger: logging.Logger, what: str, exc: BaseException, **extra: str) -> None:
    """One line for a fault no handler foresaw: its type and where it arose (the innermost frame of
    the project's own code), with the request id. Never its message nor its traceback: a driver's
    message quotes the SQL and the request's values (README "Input")."""
    logger.error(
        "%s: %s at %s",
        what,
        type(exc).__name__,
        _where(exc),
        # The request id in the record itself too, whichever handler writes it.
        extra={"error": type(exc).__name__, "request_id": REQUEST_ID.get(), **extra},
    )


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve().is_relative_to(_PROJECT)]
    if not (own or frames):
        return "unknown"
    frame = (own or frames)[-1]
    path = Path(frame.filename).resolve()
    shown = path.relative_to(_PROJECT) if path.is_relative_to(_PROJECT) else Path(path.name)
    return f"{shown}:{frame.lineno} ({frame.name})"


def _outcome_of_status(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    return "client_error" if status < 500 else "server_error"


class TelemetryMiddleware:
    def __init__(self, app: ASGIApp, *, soap_operations: dict[str, str]) -> None:
        self.app = app
        self.soap_operations = soap_operations
        # The metrics' labelled children, found once: ``labels()`` checks and looks up its values on
        # every call. The label values are closed sets, as metrics.py requires.
        self._in_flight = {channel: metrics.IN_FLIGHT.labels(channel=channel) for channel in ("soap", "rest")}
        self._requests: dict[tuple[str, str, str], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNMEASURED:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = (headers.get(b"x-request-id") or headers.get(b"x-correlation-id") or b"").decode("latin-1")
        # 32 random hex digits, as uuid4().hex but for its fixed version digits, at a quarter of the cost.
        request_id = given if _SAFE_ID.match(given) else os.urandom(16).hex()
        token = REQUEST_ID.set(request_id)
        path: str = scope["path"]
        soap = self.soap_operations.get(path)
        channel = "soap" if soap else "rest"
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        in_flight = self._in_flight[channel]
        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            in_flight.dec()
            self._record(scope, soap, channel, status, time.perf_counter() - started)
            REQUEST_ID.reset(token)

    def _record(self, scope: Scope, soap: str | None, channel: str, status: int, elapsed: float) -> None:
        operation = soap or self._route(scope)
        state: dict[str, Any] = scope.get("state") or {}
        outcome = (state.get("soap_outcome") if soap else None) or _outcome_of_status(status)
        requests = self._requests.get((operation, channel, outcome))
        if requests is None:
            requests = metrics.REQUESTS.labels(operation=operation, channel=channel, outcome=outcome)
            self._requests[operation, channel, outcome] = requests
        duration = self._durations.get((operation, channel))
        if duration is None:
            duration = metrics.DURATION.labels(operation=operation, channel=channel)
            self._durations[operation, channel] = duration
        requests.inc()
        duration.observe(elapsed)
        log.info(
            "request",
            extra={
                "operation": operation,
                "channel": channel,
                "outcome": outcome,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
            },
        )

    @staticmethod
    def _route(scope: Scope) -> str:
        route = scope.get("route")
        template = getattr(route, "path", None)
        return f"{scope['method']} {template}" if template else _UNROUTED
