"""The gateway's writes: create a dispatch, send it, record what the insurer answered.

- `dispatch_create` stores a dispatch and its items with deterministic idempotency keys
  (the same items to the same insurer always make the same key, so a retry is the same
  dispatch to the insurer). The database refuses an item already in a live dispatch.
- `dispatch_send` sends one dispatch: the breaker admits the call (or refuses without
  calling), the shared rate limit paces it, the adapter speaks the protocol, and every
  result is written by `item_results_record`. A transient failure counts against the
  breaker and is raised for the caller (the pipeline) to schedule the retry; a permanent
  one fails the dispatch.
- `item_results_record` is the ONE place a result lands on its item — inline answers,
  webhook events and response files all come through it — and the one place results are
  handed upward (`insurers.handlers`), after commit, only for items it changed, so a
  duplicate or stale answer changes nothing and calls nobody.
- `insurer_settings_save` saves what the admin's insurer form changed, rotates a webhook
  secret or replaces the credentials, and audits which of the endpoint, connection,
  credentials and secrets changed (the field names, never a value).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta

import structlog
from django.db import connection, transaction
from django.utils import timezone

from ems.audit import audit_record
from insurers import breaker, handlers
from insurers.adapters import adapter_for
from insurers.adapters.base import (
    ACCEPTED,
    CONFIRMED,
    PENDING,
    REJECTED,
    GatewayError,
    ItemResult,
    PermanentError,
    TransientError,
)
from insurers.models import Dispatch, DispatchItem, Insurer

log = structlog.get_logger(__name__)
# How long past the insurer's request timeout a SENDING dispatch is left to its worker.
SENDING_LEASE_SECONDS = 5

Result = DispatchItem.Result
_RESULT_OF = {ACCEPTED: Result.ACCEPTED, CONFIRMED: Result.CONFIRMED, REJECTED: Result.REJECTED}
_FINAL = (Result.CONFIRMED, Result.REJECTED)
# A result may only move forward: PENDING -> ACCEPTED -> CONFIRMED, or to REJECTED from either.
_ALLOWED_FROM = {
    Result.ACCEPTED: (Result.PENDING,),
    Result.CONFIRMED: (Result.PENDING, Result.ACCEPTED),
    Result.REJECTED: (Result.PENDING, Result.ACCEPTED),
}


_RESULT_COLUMNS = (
    "result",
    "insurer_reference",
    "insurer_member_id",
    "insurer_premium",
    "result_code",
    "result_reason",
    "result_data",
    "result_at",
    "is_live",
)


def item_idempotency_key(reference: str) -> str:
    return f"itm-{reference}"


def dispatch_idempotency_key(insurer: Insurer, item_keys: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(item_keys)).encode()).hexdigest()[:32]
    return f"dsp-{insurer.code}-{digest}"


@transaction.atomic
def dispatch_create(*, insurer: Insurer, items: list[dict]) -> Dispatch:
    """A dispatch of `items` (each: reference, kind, payload).

    Raises IntegrityError if an item is already in a live dispatch."""
    if not items:
        raise ValueError("a dispatch needs at least one item")
    keys = [item_idempotency_key(item["reference"]) for item in items]
    base_key = dispatch_idempotency_key(insurer, keys)
    # The same items sent again as a NEW dispatch (one retried alone after its dispatch
    # failed) get the next generation of the key; the items keep their own keys, by which
    # the insurer recognises what it already has.
    earlier = Dispatch.objects.filter(idempotency_key__startswith=base_key).count()
    dispatch = Dispatch.objects.create(
        insurer=insurer,
        protocol=insurer.protocol,
        idempotency_key=base_key if not earlier else f"{base_key}-g{earlier + 1}",
    )
    DispatchItem.objects.bulk_create(
        DispatchItem(
            dispatch=dispatch,
            reference=item["reference"],
            kind=item["kind"],
            payload=item["payload"],
            idempotency_key=key,
        )
        for item, key in zip(items, keys, strict=True)
    )
    return dispatch


def dispatch_send(*, dispatch_id: int) -> list[ItemResult]:
    """Send one dispatch now. Raises TransientError (retry later) or PermanentError (dispatch FAILED)."""
    dispatch = Dispatch.objects.select_related("insurer").get(pk=dispatch_id)
    insurer = dispatch.insurer
    items = list(dispatch.items.filter(is_live=True, result=Result.PENDING).order_by("id"))
    if not items:
        return []
    breaker.call_admit(insurer)
    breaker.rate_limit_wait(insurer)
    # SENDING holds a lease: a worker killed mid-call leaves the dispatch for the send sweep
    # to pick up once the lease ends (the same idempotency key, so the insurer acts once).
    Dispatch.objects.filter(pk=dispatch.pk).update(
        state=Dispatch.State.SENDING,
        attempts=dispatch.attempts + 1,
        next_attempt_at=timezone.now()
        + timedelta(seconds=insurer.request_timeout_seconds + SENDING_LEASE_SECONDS),
    )
    try:
        results = adapter_for(insurer).send(dispatch, items)
    except TransientError as error:
        breaker.call_failed(insurer, error)
        Dispatch.objects.filter(pk=dispatch.pk).update(
            state=Dispatch.State.PENDING, last_error=_error_text(error)
        )
        log.warning("insurers.dispatch_transient", dispatch_id=dispatch.pk, code=error.code)
        raise
    except PermanentError as error:
        breaker.call_succeeded(insurer)  # the insurer answered: it is up
        Dispatch.objects.filter(pk=dispatch.pk).update(
            state=Dispatch.State.FAILED, last_error=_error_text(error)
        )
        log.warning("insurers.dispatch_permanent", dispatch_id=dispatch.pk, code=error.code)
        raise
    breaker.call_succeeded(insurer)
    Dispatch.objects.filter(pk=dispatch.pk).update(
        state=Dispatch.State.SENT, sent_at=timezone.now(), last_error="", next_attempt_at=None
    )
    item_results_record(insurer=insurer, results=results, source="inline")
    return results


def dispatch_fail(*, dispatch_id: int, error: str) -> None:
    """Retries exhausted: the dispatch is a dead letter.

    Its unanswered items stop being live, so each can be retried alone."""
    with transaction.atomic():
        Dispatch.objects.filter(pk=dispatch_id).update(state=Dispatch.State.FAILED, last_error=error[:2000])
        DispatchItem.objects.filter(dispatch_id=dispatch_id, is_live=True).exclude(
            result__in=[Result.ACCEPTED]
        ).update(is_live=False)


@transaction.atomic
def item_results_record(*, insurer: Insurer, results: Sequence[ItemResult], source: str) -> list[ItemResult]:
    """Write each result on its live item (forward moves only); hand the changed ones upward after commit.

    Returns the results that changed an item. A result for a reference with no live item,
    or one that would move an item backwards (a late duplicate), changes nothing.
    """
    wanted = {result.reference: result for result in results if result.outcome != PENDING}
    if not wanted:
        return []
    items = {
        item.reference: item
        for item in DispatchItem.objects.select_for_update()
        .filter(dispatch__insurer=insurer, reference__in=list(wanted), is_live=True)
        .only(*_RESULT_COLUMNS, "dispatch_id", "reference")
        .order_by("pk")
    }
    items.update(_late_items(insurer, [reference for reference in wanted if reference not in items]))
    changed: list[ItemResult] = []
    written: list[DispatchItem] = []
    now = timezone.now()
    touched_dispatches: set[int] = set()
    for reference, result in wanted.items():
        item = items.get(reference)
        target = _RESULT_OF[result.outcome]
        if item is None or item.result not in _ALLOWED_FROM[target]:
            continue
        item.result = target
        item.insurer_reference = result.insurer_reference or item.insurer_reference
        item.insurer_member_id = result.insurer_member_id or item.insurer_member_id
        if result.insurer_premium is not None:
            item.insurer_premium = result.insurer_premium
        item.result_code = result.code
        item.result_reason = result.reason
        item.result_data = {**item.result_data, **result.data, "source": source}
        item.result_at = now
        item.is_live = target not in _FINAL
        written.append(item)
        touched_dispatches.add(item.dispatch_id)
        changed.append(result)
    _items_write(written)
    _dispatches_complete(touched_dispatches, now)
    log.info("insurers.results_recorded", insurer_id=insurer.pk, source=source, changed=len(changed))
    handlers.confirmations_notify(insurer.pk, changed)
    return changed


def _late_items(insurer: Insurer, references: list[str]) -> dict[str, DispatchItem]:
    """Unanswered items of FAILED dispatches (we gave up, the insurer answered after all).

    Such an item is no longer live (so it can be retried alone); a late answer still lands
    on it while no newer item for the reference exists: the newest item of a reference wins."""
    if not references:
        return {}
    late: dict[str, DispatchItem] = {}
    for item in (
        DispatchItem.objects.select_for_update()
        .filter(dispatch__insurer=insurer, reference__in=references)
        .only(*_RESULT_COLUMNS, "dispatch_id", "reference", "dispatch__state")
        .select_related("dispatch")
        .order_by("pk")
    ):
        late[item.reference] = item  # pk order: the newest stays
    return {
        reference: item
        for reference, item in late.items()
        if item.result == Result.PENDING and item.dispatch.state == Dispatch.State.FAILED
    }


def item_release(*, reference: str) -> int:
    """Take a reference out of its live dispatch (ops cancelled it, or it is retried alone)."""
    return DispatchItem.objects.filter(reference=reference, is_live=True).update(is_live=False)


def _items_write(items: Sequence[DispatchItem]) -> None:
    """Save the result columns of many items in one statement.

    PostgreSQL: one `UPDATE ... FROM unnest(<one array per column>)`, so a 500-item answer is
    one statement with ten parameters; SQLite (`make run`): one UPDATE by id per item, run as
    a batch. `bulk_update`'s CASE expressions and 500 `save()` calls were each several times
    slower for a full dispatch."""
    if not items:
        return
    fields = [DispatchItem._meta.get_field(name) for name in _RESULT_COLUMNS]
    quote = connection.ops.quote_name
    table = quote(DispatchItem._meta.db_table)
    if connection.vendor != "postgresql":
        assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
        rows = [
            [field.get_db_prep_save(getattr(item, field.attname), connection) for field in fields] + [item.pk]
            for item in items
        ]
        with connection.cursor() as cursor:
            cursor.executemany(f"UPDATE {table} SET {assignments} WHERE id = %s", rows)  # noqa: S608
        return
    # JSON travels as text and is cast per row (a jsonb[] parameter would need one adapter per value)
    arrays = [[item.pk for item in items]]
    casts = ["bigint[]"]
    for field in fields:
        values = [getattr(item, field.attname) for item in items]
        if field.get_internal_type() == "JSONField":
            values, cast = [json.dumps(value) for value in values], "text[]"
        else:
            cast = f"{field.db_type(connection)}[]"
        arrays.append(values)
        casts.append(cast)
    names = ["id", *(quote(field.column) for field in fields)]
    assignments = ", ".join(
        f"{name} = v.{name}::jsonb" if field.get_internal_type() == "JSONField" else f"{name} = v.{name}"
        for name, field in zip(names[1:], fields, strict=True)
    )
    unnest = ", ".join(f"%s::{cast}" for cast in casts)
    sql = (
        f"UPDATE {table} AS t SET {assignments} "  # noqa: S608 - names from the model, values bound
        f"FROM unnest({unnest}) AS v({', '.join(names)}) WHERE t.id = v.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, arrays)


def _dispatches_complete(dispatch_ids: set[int], now) -> None:
    if not dispatch_ids:
        return
    open_ids = set(
        DispatchItem.objects.filter(dispatch_id__in=dispatch_ids)
        .exclude(result__in=_FINAL)
        .values_list("dispatch_id", flat=True)
    )
    done = dispatch_ids - open_ids
    if done:
        Dispatch.objects.filter(pk__in=done).exclude(state=Dispatch.State.FAILED).update(
            state=Dispatch.State.COMPLETED, completed_at=now
        )


def _error_text(error: GatewayError) -> str:
    return f"{error.code}: {error}"[:2000]


# Protocols whose insurers answer later only when asked: response files (SFTP), a status call (SOAP).
POLLED_PROTOCOLS = (Insurer.Protocol.SFTP, Insurer.Protocol.SOAP)


def confirmations_poll(*, insurer_id: int) -> list[ItemResult]:
    """Fetch what a polled insurer has answered since the last poll and record it.

    Each response is fetched once (an SFTP file is claimed by moving it to the archive), then
    written by `item_results_record`. The breaker applies as for a send."""
    insurer = Insurer.objects.get(pk=insurer_id)
    breaker.call_admit(insurer)
    try:
        results = adapter_for(insurer).confirmations_fetch(insurer)
    except TransientError as error:
        breaker.call_failed(insurer, error)
        raise
    breaker.call_succeeded(insurer)
    return item_results_record(insurer=insurer, results=results, source="poll")


def polled_insurer_ids() -> list[int]:
    """The active insurers that answer only when asked (response files, a status call)."""
    return list(
        Insurer.objects.filter(is_active=True, protocol__in=POLLED_PROTOCOLS)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def confirmations_poll_logged(*, insurer_id: int) -> int:
    """Poll one insurer; a failure is logged (the next beat tries again). Returns results recorded."""
    try:
        return len(confirmations_poll(insurer_id=insurer_id))
    except GatewayError as error:
        log.warning(
            "insurers.confirmations_poll_failed", insurer_id=insurer_id, code=error.code, error=str(error)
        )
        return 0


def confirmations_poll_due() -> int:
    """Poll every active polled insurer in turn (the beat fans out one task per insurer instead)."""
    return sum(confirmations_poll_logged(insurer_id=insurer_id) for insurer_id in polled_insurer_ids())


# --- asking the insurer what it has (ops' cancel of a dead letter) ---------------------------


def references_status(*, insurer_id: int, references: Sequence[str]) -> list[ItemResult]:
    """What the insurer says it has for these references (those it never got are absent).

    Raises TransientError when the insurer cannot be reached (the breaker applies as for a send)."""
    insurer = Insurer.objects.get(pk=insurer_id)
    breaker.call_admit(insurer)
    try:
        results = adapter_for(insurer).status_fetch(insurer, list(references))
    except TransientError as error:
        breaker.call_failed(insurer, error)
        raise
    breaker.call_succeeded(insurer)
    return results


# --- connection settings and secrets (the admin's insurer form) ---------------------------

# Changing any of these is audited by field name: who, when, which fields, never a value.
AUDITED_SETTINGS = (
    "endpoint_url",
    "connection",
    "credentials",
    "webhook_secret_primary",
    "webhook_secret_secondary",
)


def insurer_settings_save(
    *,
    insurer: Insurer,
    changed: Sequence[str],
    actor: str,
    created: bool = False,
    new_webhook_secret: str = "",
    drop_previous_secret: bool = False,
    new_credentials: dict | None = None,
) -> list[str]:
    """Save an insurer's edited fields (or a new insurer); returns the audited fields.

    A new webhook secret rotates: the current primary becomes the secondary (still
    accepted by the webhooks) until `drop_previous_secret` clears it. New credentials
    replace the old ones whole.
    """
    fields = list(dict.fromkeys(changed))
    if new_webhook_secret:
        insurer.webhook_secret_secondary = insurer.webhook_secret_primary
        insurer.webhook_secret_primary = new_webhook_secret
        fields += ["webhook_secret_primary", "webhook_secret_secondary"]
    if drop_previous_secret and insurer.webhook_secret_secondary and not new_webhook_secret:
        insurer.webhook_secret_secondary = ""
        fields.append("webhook_secret_secondary")
    if new_credentials is not None:
        insurer.credentials = new_credentials
        fields.append("credentials")
    fields = list(dict.fromkeys(fields))
    if created:  # what the new insurer was given
        audited = [name for name in AUDITED_SETTINGS if getattr(insurer, name)]
    else:  # what differs from the stored row (a form may call an untouched field changed)
        stored = Insurer.objects.filter(pk=insurer.pk).values(*AUDITED_SETTINGS).get()
        audited = [name for name in AUDITED_SETTINGS if stored[name] != getattr(insurer, name)]
    action = "insurer.created" if created else "insurer.settings_changed"
    with transaction.atomic():
        if created:
            insurer.save()
        elif fields:
            insurer.save(update_fields=fields)
        if audited:
            audit_record(
                actor=actor,
                action=action,
                object_type="insurer",
                object_id=insurer.pk,
                after={"fields": audited},
            )
    if audited:
        log.info(action, insurer_id=insurer.pk, fields=audited, actor=actor)
    return audited
