"""The citizen REST API for the portals (1177 / Mina intyg), under ``/api/citizen/v1``.

Each handler reads the request, calls one function of ``service.operations`` as the citizen the bearer
token names (never a citizen named in a path or body), and renders the answer. Errors are answered by
``rest/errors.py``. Annotations are evaluated (no ``from __future__ import annotations``): FastAPI
reads them to know that the citizen comes from the token dependency built inside ``citizen_router``.
"""

import datetime as dt
import json
import re
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from service import document, errors, operations
from service.access import UNIDENTIFIED
from service.audit import RefusalBudget
from service.model import (
    CERTIFICATE_ID_LENGTH,
    CERTIFICATE_ID_PATTERN,
    Caller,
    CallerKind,
    Channel,
    PersonId,
    Recipient,
)
from service.rest import schemas
from service.rest.auth import TokenVerifier
from service.rest.errors import PROBLEM_JSON

PREFIX = "/api/citizen/v1"
CertificateId = Annotated[
    str, Path(min_length=1, max_length=CERTIFICATE_ID_LENGTH, pattern=CERTIFICATE_ID_PATTERN)
]


def _not_a_number(value: object) -> object:
    """RFC 3339 only: pydantic would read a bare number as Unix time."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("a time is an RFC 3339 date-time")
    return value


_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?")
Timestamp = Annotated[dt.datetime, BeforeValidator(_not_a_number)]


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _DuplicateKey
    return found


class _StrictJsonRequest(Request):
    """A key given twice is ambiguous: parsers disagree on which one wins, so ``{"given": true,
    "given": false}`` must not withdraw consent by a parser's choice. It is malformed JSON here (422)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = json.loads(await self.body(), object_pairs_hook=_unique_keys)
            except _DuplicateKey:
                raise json.JSONDecodeError("a key is given twice", "", 0) from None
        return self._json


class _StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The problems a route may answer: every one may be refused its token or body, and answered 503
    when the store does not answer in time (``errors.StoreUnavailable``, with Retry-After)."""
    return {
        status: {
            "model": schemas.Problem,
            "content": {PROBLEM_JSON: {"schema": schemas.Problem.model_json_schema()}},
        }
        for status in (401, 413, 422, 503, *statuses)
    }


def citizen_router(
    *,
    verifier: TokenVerifier,
    unit_of_work: Callable[[], operations.UnitOfWork],
    clock: Callable[[], dt.datetime],
    recipients: dict[str, Recipient],
    zone: ZoneInfo,
    unidentified: RefusalBudget,
) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["citizen"], route_class=_StrictJsonRoute)
    # Declared as the OpenAPI bearer scheme; a missing or malformed header is the verifier's 401.
    bearer = HTTPBearer(auto_error=False, bearerFormat="JWT", description="signed by the citizen portal")

    # Async, though it awaits nothing: a plain ``def`` dependency is sent to the thread pool, whose
    # hand-off costs more than the verification itself.
    async def citizen(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> PersonId:
        try:
            return verifier.citizen(
                f"{credentials.scheme} {credentials.credentials}" if credentials else None
            )
        except errors.Unauthenticated as refusal:
            # Audited as SOAP's refusals are: an unidentified caller, denied, named by the route.
            await operations.refuse_call(
                unit_of_work(),
                caller=Caller(CallerKind.CITIZEN, Channel.REST, UNIDENTIFIED),
                called=f"{request.method} {request.scope['route'].path}",
                now=clock(),
                error=refusal,
                budget=unidentified,
            )

    Citizen = Annotated[PersonId, Depends(citizen)]

    def caller(who: PersonId) -> Caller:
        return Caller(CallerKind.CITIZEN, Channel.REST, "citizen-portal", citizen=who)

    @router.get("/certificates", responses=_problems(403), summary="The citizen's own certificates")
    async def list_certificates(who: Citizen, archived: bool = False) -> schemas.CertificateList:
        listed = await operations.list_certificates_for_citizen(
            unit_of_work(), citizen=who, archived=archived, caller=caller(who), now=clock()
        )
        return schemas.CertificateList(certificates=[schemas.CertificateSummary.of(c, zone) for c in listed])

    @router.get("/certificates/{certificate_id}", responses=_problems(403, 404), summary="One certificate")
    async def get_certificate(who: Citizen, certificate_id: CertificateId) -> schemas.CertificateDetail:
        found = await operations.get_certificate_for_citizen(
            unit_of_work(), certificate_id=certificate_id, citizen=who, caller=caller(who), now=clock()
        )
        return schemas.CertificateDetail.with_answers(found.certificate, found.document, zone)

    @router.get(
        "/certificates/{certificate_id}/document",
        responses={200: {"content": {"application/xml": {}}}, **_problems(403, 404)},
        response_class=Response,
        summary="The certificate as it was registered (XML)",
    )
    async def get_document(who: Citizen, certificate_id: CertificateId) -> Response:
        found = await operations.get_certificate_for_citizen(
            unit_of_work(), certificate_id=certificate_id, citizen=who, caller=caller(who), now=clock()
        )
        return Response(document.content(found.document), media_type="application/xml")

    @router.post(
        "/certificates/{certificate_id}/archive", responses=_problems(403, 404), summary="Archive (rule 4)"
    )
    async def archive(who: Citizen, certificate_id: CertificateId) -> schemas.CertificateSummary:
        changed = await operations.archive_certificate(
            unit_of_work(), certificate_id=certificate_id, citizen=who, caller=caller(who), now=clock()
        )
        return schemas.CertificateSummary.of(changed, zone)

    @router.post(
        "/certificates/{certificate_id}/restore", responses=_problems(403, 404), summary="Restore (rule 4)"
    )
    async def restore(who: Citizen, certificate_id: CertificateId) -> schemas.CertificateSummary:
        changed = await operations.restore_certificate(
            unit_of_work(), certificate_id=certificate_id, citizen=who, caller=caller(who), now=clock()
        )
        return schemas.CertificateSummary.of(changed, zone)

    @router.post(
        "/certificates/{certificate_id}/send",
        responses=_problems(403, 404, 409),
        summary="Send to a recipient",
    )
    async def send(
        who: Citizen, certificate_id: CertificateId, body: schemas.SendRequest
    ) -> schemas.SendResult:
        changed, already_sent = await operations.send_certificate(
            unit_of_work(),
            certificate_id=certificate_id,
            citizen=who,
            recipient_id=body.recipient,
            recipients=recipients,
            caller=caller(who),
            now=clock(),
        )
        return schemas.SendResult(
            already_sent=already_sent, certificate=schemas.CertificateSummary.of(changed, zone)
        )

    @router.get("/consent", responses=_problems(), summary="The citizen's consent")
    async def get_consent(who: Citizen) -> schemas.ConsentState:
        consent = await operations.get_consent(unit_of_work(), citizen=who, caller=caller(who), now=clock())
        return schemas.ConsentState.of(consent, zone)

    @router.put("/consent", responses=_problems(), summary="Give or withdraw consent (rules 6 and 7)")
    async def set_consent(who: Citizen, body: schemas.ConsentRequest) -> schemas.ConsentResult:
        change = await operations.set_consent(
            unit_of_work(), citizen=who, given=body.given, caller=caller(who), now=clock()
        )
        return schemas.ConsentResult(
            given=change.consent.given,
            changed_at=schemas.aware(change.consent.changed_at, zone),
            deleted=change.deleted,
        )

    @router.get("/access-log", responses=_problems(), summary="Who accessed my data (PDL 8 kap. 5 §)")
    async def access_log(
        who: Citizen,
        start: Annotated[Timestamp | None, Query(alias="from")] = None,
        end: Annotated[Timestamp | None, Query(alias="to")] = None,
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
        page_size: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> schemas.AccessLog:
        found = await operations.access_log(
            unit_of_work(),
            citizen=who,
            start=_local(start, zone),
            end=_local(end, zone),
            limit=page_size,
            offset=(page - 1) * page_size,
            caller=caller(who),
            now=clock(),
        )
        return schemas.AccessLog(
            entries=[schemas.AccessLogEntry.of(r, zone) for r in found.records],
            page=page,
            page_size=page_size,
            total=found.total,
        )

    return router


def _local(value: dt.datetime | None, zone: ZoneInfo) -> dt.datetime | None:
    """Stored times are the service's wall-clock time; a time given with a zone is converted to it."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(zone).replace(tzinfo=None)
    except OverflowError:
        raise errors.InvalidInput("the time is out of range") from None
