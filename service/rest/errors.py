"""How the REST channel answers each error of ``service.errors``: RFC 9457 problem+json, one table.

``tests/unit/test_error_maps.py`` checks that every error class has an entry, or is answered as another
error that has (``errors.ANSWERED_AS``): a citizen asking for another citizen's certificate gets exactly
the answer of an unknown id (404), so nothing leaks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors
from service.rest.schemas import Problem
from service.telemetry import log_unforeseen

log = logging.getLogger("service.rest")

PROBLEM_JSON: Final = "application/problem+json"


@dataclass(frozen=True, slots=True)
class RestError:
    status: int
    code: str
    title: str
    # Seconds after which a retry may succeed (RFC 9110 Retry-After), for a failure that passes.
    retry_after: int | None = None


ERRORS: Final[dict[type[errors.ServiceError], RestError]] = {
    errors.ServiceError: RestError(500, "internal_error", "The request could not be carried out"),
    errors.InvalidInput: RestError(422, "invalid_input", "The request has invalid values"),
    errors.InvalidPersonId: RestError(422, "invalid_person_id", "Invalid personal identity number"),
    errors.InvalidStatusChange: RestError(422, "invalid_status_change", "This status change is not allowed"),
    errors.PatientMismatch: RestError(422, "patient_mismatch", "The certificate belongs to another patient"),
    errors.UnknownRecipient: RestError(
        422, "unknown_recipient", "Unknown recipient, or it does not take this type of certificate"
    ),
    # Raised only where a care system registers (SOAP); here for a complete table.
    errors.UnknownCertificateType: RestError(
        422, "unknown_certificate_type", "Unknown certificate type or version"
    ),
    # The citizen API registers nothing; the entry keeps the table whole.
    errors.BusinessRuleViolation: RestError(
        422, "invalid_input", "The certificate does not follow the rules of its type"
    ),
    errors.CertificateNotFound: RestError(404, "not_found", "Certificate not found"),
    errors.Conflict: RestError(409, "conflict", "The request conflicts with the stored state"),
    errors.CertificateIdConflict: RestError(409, "certificate_id_conflict", "Certificate id already used"),
    errors.CertificateRevoked: RestError(409, "revoked", "The certificate is revoked"),
    errors.Denied: RestError(403, "denied", "The caller may not do this"),
    errors.ConsentRequired: RestError(403, "consent_required", "Consent is required to use this service"),
    errors.CertificateIdTaken: RestError(409, "certificate_id_conflict", "Certificate id already used"),
    errors.CallerNotPermitted: RestError(403, "caller_not_permitted", "The calling system may not do this"),
    errors.Unauthenticated: RestError(401, "unauthenticated", "A valid bearer token is required"),
    errors.ConcurrentChange: RestError(
        503, "concurrent_change", "A concurrent change interfered; try again", retry_after=1
    ),
    errors.StoreUnavailable: RestError(
        503, "store_unavailable", "The service is temporarily unavailable; try again later", retry_after=5
    ),
    # Encryption at rest: the same answer as any internal error; nothing of the row is shown.
    errors.StoredDataUnreadable: RestError(500, "internal_error", "The request could not be carried out"),
    errors.KekMissing: RestError(500, "internal_error", "The request could not be carried out"),
    errors.UnexpectedError: RestError(500, "internal_error", "The request could not be carried out"),
}

# Problems the framework raises before an operation is reached.
_HTTP_CODES: Final = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
}


def rest_error(exc: errors.ServiceError) -> RestError:
    for cls in errors.answered_as(type(exc)).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return ERRORS[errors.ServiceError]


def problem(
    status: int, code: str, title: str, detail: str | None = None, *, retry_after: int | None = None
) -> JSONResponse:
    body = Problem(title=title, status=status, code=code, detail=detail).model_dump(exclude_none=True)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="intygstjanst", error="invalid_token"'
    if status == 408:
        # The body did not arrive in time (service/connection.py); the rest of it may still be on its
        # way, where a next request would be read (RFC 9110, 408: the server closes the connection).
        headers["Connection"] = "close"
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install(app: FastAPI) -> None:
    """Answer errors as problem+json; the message of an exception never reaches the caller."""

    @app.exception_handler(errors.ServiceError)
    async def service_error(_: Request, exc: errors.ServiceError) -> JSONResponse:
        error = rest_error(exc)
        return problem(error.status, error.code, error.title, errors.told(exc), retry_after=error.retry_after)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Where, not what: a rejected value may be a personal identity number.
        where = sorted({".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()})
        return problem(
            422, "invalid_request", "The request does not follow the API", f"at {', '.join(where)}"
        )

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # A body FastAPI cannot decode (not UTF-8, not JSON) is invalid input like any other.
            return problem(422, "invalid_request", "The request does not follow the API", "at body")
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, code.replace("_", " ").capitalize())


class Unforeseen:
    """An exception no handler answered is answered here as problem+json 500 and logged as one line.
    Starlette's outermost ``ServerErrorMiddleware`` would answer it too, but then raises it again for
    the server to log with its traceback, whose messages may quote SQL and the request's values, and
    the server drops the connection (README "Input"). Installed inside the telemetry middleware, which
    counts the 500 and holds the request id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            log_unforeseen(log, "request failed", exc)
            if not started:
                answer = ERRORS[errors.ServiceError]
                await problem(answer.status, answer.code, answer.title)(scope, receive, send)
