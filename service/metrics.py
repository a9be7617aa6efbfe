"""Every Prometheus metric of the service. Labels are operation, channel, outcome and small closed sets
(certificate type, recipient, rule, reason): never a personal identity number, a certificate id or an
HSA person id.

Business counters are derived from committed audit records (``observe``), so that a metric never
counts what did not happen. With several worker processes, prometheus-client's multiprocess mode is
used (``PROMETHEUS_MULTIPROC_DIR``); gauges say how their values from each process combine. The metrics
are served on a port of their own (``serve``), never on the API's: a caller of the API sees none.
"""

from __future__ import annotations

import os
import time
from typing import Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

from service import certificate_type, errors
from service.model import Action, AuditRecord, Outcome

BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUESTS = Counter(
    "intyg_requests", "Requests by operation, channel and outcome", ["operation", "channel", "outcome"]
)
DURATION = Histogram(
    "intyg_request_duration_seconds", "Request latency", ["operation", "channel"], buckets=BUCKETS
)
IN_FLIGHT = Gauge(
    "intyg_requests_in_flight", "Requests being served", ["channel"], multiprocess_mode="livesum"
)

REGISTERED = Counter("intyg_certificates_registered", "Certificates registered (rule 1)", ["type"])
REVOKED = Counter("intyg_certificates_revoked", "Certificates revoked")
ARCHIVED = Counter("intyg_certificates_archived", "Certificates archived by the citizen (rule 4)")
RESTORED = Counter("intyg_certificates_restored", "Certificates restored by the citizen (rule 4)")
SENT = Counter("intyg_certificates_sent", "Certificates sent to a recipient", ["recipient"])
CARE_COPIES_REMOVED = Counter(
    "intyg_care_copies_removed", "Care copies removed by the care provider (rule 5)"
)
DELETED = Counter(
    "intyg_certificates_deleted", "Certificates deleted permanently, by DOMAIN.md rule", ["rule"]
)
EXPORTED = Counter(
    "intyg_certificates_exported",
    "Certificates read into an operator's hand-over export, before a care giver's erasure",
)
CONSENT_CHANGES = Counter("intyg_consent_changes", "Consent given or withdrawn", ["change"])
REFUSALS = Counter("intyg_refusals", "Refused operations, by reason", ["reason"])
REFUSALS_NOT_AUDITED = Counter(
    "intyg_refusals_not_audited",
    "Refusals of callers that proved no identity past the audit's budget (audit.RefusalBudget): "
    "answered, counted here, not itemised in the audit trail",
)
AUDIT_WRITE_FAILURES = Counter(
    "intyg_audit_write_failures", "Transactions whose audit record failed to commit"
)

STORED = Gauge(
    "intyg_certificates_stored",
    "Stored certificates by availability",
    ["care_available", "citizen_available"],
    multiprocess_mode="mostrecent",
)
CITIZENS_WITH_CONSENT = Gauge(
    "intyg_citizens_with_consent", "Citizens whose consent is given", multiprocess_mode="mostrecent"
)
AUDIT_RECORDS = Gauge("intyg_audit_records", "Audit records kept", multiprocess_mode="mostrecent")
AUDIT_LAST_WRITE = Gauge(
    "intyg_audit_last_write_timestamp_seconds",
    "When an audit record was last committed (audit lag: time() minus this)",
    multiprocess_mode="max",
)
# The audit log's sealer (store/audit_sealer.py, README.md "Audit log"). The tamper-evidence window is the seal lag
# plus the checkpoint interval: these show the first, and alert when it grows.
AUDIT_UNSEALED = Gauge(
    "intyg_audit_unsealed_records",
    "Audit records committed and not yet given their place in the hash chain",
    multiprocess_mode="livemax",
)
AUDIT_UNSEALED_AGE = Gauge(
    "intyg_audit_unsealed_oldest_age_seconds",
    "Age of the oldest audit record not yet sealed (0 when none waits)",
    multiprocess_mode="livemax",
)
AUDIT_SEAL_LAG = Histogram(
    "intyg_audit_seal_lag_seconds",
    "Time from an audit record's writing to its place in the hash chain",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)
AUDIT_SEALER_ELECTED = Gauge(
    "intyg_audit_sealer_elected",
    "1 in a process that is the audit log's sealer: exactly one across PostgreSQL's replicas; on SQLite"
    " every worker seals, one pass at a time",
    multiprocess_mode="livesum",
)
# The outbox and its relay (service/relay.py, README.md "Recipients and statistics"). Labelled by
# destination (a recipient's part code, or statistics) and by reason (store/outbox.Failure, or "broker
# unavailable"): closed sets. Refreshed by the relay after each round, and by the store gauges where no
# relay runs, so that a growing outbox shows on the embedded default too.
OUTBOX_PENDING = Gauge(
    "intyg_outbox_pending_events",
    "Events in the outbox waiting to be published, by destination",
    ["destination"],
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_AGE = Gauge(
    "intyg_outbox_oldest_pending_age_seconds",
    "Age of the oldest event waiting in the outbox (0 when none waits)",
    multiprocess_mode="mostrecent",
)
OUTBOX_DEAD = Gauge(
    "intyg_outbox_dead_events",
    "Events the relay gave up on (dead-lettered), kept in the outbox until put back, by destination",
    ["destination"],
    multiprocess_mode="mostrecent",
)
OUTBOX_PUBLISHED = Counter(
    "intyg_outbox_published", "Events published and confirmed by the broker", ["destination"]
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "intyg_outbox_publish_failures",
    "Publish attempts that failed, by reason: an event refused (nacked, unroutable, unbuildable, "
    "certificate deleted) or the broker unavailable (counted once per try to reach it)",
    ["reason"],
)
OUTBOX_DEAD_LETTERED = Counter(
    "intyg_outbox_dead_lettered", "Events given up on after their attempts, by reason", ["reason"]
)
RELAY_ELECTED = Gauge(
    "intyg_outbox_relay_elected",
    "1 in the process that relays the outbox to the broker: exactly one across processes and replicas",
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge("intyg_db_pool_in_use", "Database connections checked out", multiprocess_mode="livesum")
POOL_SIZE = Gauge("intyg_db_pool_size", "Database connections the pool keeps", multiprocess_mode="livesum")
# Counted by an engine event (store/unit_of_work.py) so that statements per request are measured, not
# estimated (README.md, "Benchmark"). Requests and background loops apart: label ``source`` (``store.Source``).
DB_STATEMENTS = Counter(
    "intyg_db_statements",
    "SQL statements executed through a database cursor, by source (request or background). "
    "Not counted: BEGIN, COMMIT and ROLLBACK that the driver issues itself. Counted: SQLite's "
    "BEGIN IMMEDIATE, which the service issues.",
    ["source"],
)
BUILD_INFO = Gauge("intyg_build_info", "Build information", ["version"], multiprocess_mode="max")


def observe(record: AuditRecord) -> None:
    """Count what a committed audit record says happened (the business counters)."""
    AUDIT_LAST_WRITE.set(time.time())
    if record.outcome in (Outcome.DENIED, Outcome.ERROR):
        # Counted as the error it is answered as, so that the metrics do not tell a foreign id from an
        # unknown one (errors.ANSWERED_AS); the audit record keeps the refusal itself.
        reason = errors.answered_as(record.reason).__name__ if record.reason else "unknown"
        REFUSALS.labels(reason=reason).inc()
        return
    if record.outcome is not Outcome.OK:
        return
    match record.action:
        case Action.REGISTER:
            # A label takes no value a caller chooses: the type's code where the table knows it.
            REGISTERED.labels(type=certificate_type.label(record.certificate_type or "")).inc()
        case Action.REVOKE:
            REVOKED.inc()
        case Action.ARCHIVE:
            ARCHIVED.inc()
        case Action.RESTORE:
            RESTORED.inc()
        case Action.SEND if record.recipient is not None:
            SENT.labels(recipient=record.recipient.value).inc()
        case Action.REMOVE_CARE_COPY:
            CARE_COPIES_REMOVED.inc()
            if record.deleted:
                DELETED.labels(rule="5").inc(record.deleted)
        case Action.EXPORT:
            EXPORTED.inc()
        case Action.GIVE_CONSENT | Action.WITHDRAW_CONSENT:
            CONSENT_CHANGES.labels(
                change="given" if record.action is Action.GIVE_CONSENT else "withdrawn"
            ).inc()
            if record.deleted:
                DELETED.labels(rule="6").inc(record.deleted)


def serve(host: str, port: int) -> None:
    """Serve the metrics on their own port, from a daemon thread of this process, with prometheus-client's
    own server: every worker's through their files in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set
    before this is called), else this process's. Raises OSError where the port cannot be bound.

    ``intygstjanst serve`` calls it once, in the process that runs uvicorn, before the workers start: with
    one worker that process serves the requests itself; with several it is their supervisor, which
    serves no request, outlives every worker it restarts, and reads all of their files. Started in each
    worker instead, the workers would race for one port, and every one but the first would fail.
    """
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
