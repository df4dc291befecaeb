"""SOAP adapter: zeep against the insurer's WSDL.

The WSDL is fetched and parsed once per process and per (WSDL, timeout, username): a
`zeep.Client` is kept in `_clients`. Its transport bounds loading the WSDL and every
operation by the insurer's `request_timeout_seconds`. When `credentials` carry `username`
and `password`, each request carries a WS-Security UsernameToken (a password digest
unless `connection["wsse_password_text"]` asks for text). The dispatch's idempotency key
travels in the `DispatchHeader` SOAP header.

Operations (names overridable in `connection["operations"]`): `SubmitEndorsements`,
`EndorsementStatus`, `ConfirmationsDue` (polled for `confirmations_fetch`), `MemberRoster`,
`AccountStatement`. Failures: a SOAP fault whose
code is `Server*` is transient, `Client*` permanent (a `retry_after` in the fault detail
is honoured); HTTP 5xx/429 without a fault, timeouts and connection errors are transient;
any other HTTP status is permanent.
"""

import threading
import time
from collections.abc import Sequence
from datetime import date

import requests
import zeep
import zeep.exceptions
from zeep.helpers import serialize_object
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from insurers.adapters.base import ItemResult, PermanentError, TransientError, item_result_from
from insurers.exchanges import exchange_record

OPERATIONS = {
    "send": "SubmitEndorsements",
    "status": "EndorsementStatus",
    "confirmations": "ConfirmationsDue",
    "roster": "MemberRoster",
    "statement": "AccountStatement",
}
STATUS_BATCH = 500  # references per status call
DATA_FIELDS = ("effective_date", "sum_insured")  # what the insurer holds, kept in ItemResult.data
_clients: dict[tuple, zeep.Client] = {}
_clients_lock = threading.Lock()


def _client(insurer) -> zeep.Client:
    credentials = insurer.credentials or {}
    timeout = float(insurer.request_timeout_seconds)
    key = (insurer.endpoint_url, timeout, credentials.get("username", ""), credentials.get("password", ""))
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                wsse = None
                if credentials.get("username"):
                    use_digest = not (insurer.connection or {}).get("wsse_password_text", False)
                    wsse = UsernameToken(
                        credentials["username"], credentials.get("password", ""), use_digest=use_digest
                    )
                transport = Transport(timeout=timeout, operation_timeout=timeout)
                client = _call(lambda: zeep.Client(insurer.endpoint_url, transport=transport, wsse=wsse))
                _clients[key] = client
    return client


def _retry_after(detail) -> float | None:
    if detail is None:
        return None
    for element in detail.iter():
        if isinstance(element.tag, str) and element.tag.rsplit("}", 1)[-1] == "retry_after" and element.text:
            try:
                return float(element.text)
            except ValueError:
                return None
    return None


def _call(call):
    """Run one SOAP call, turning every failure into a TransientError or a PermanentError."""
    try:
        return call()
    except zeep.exceptions.Fault as exc:
        code = (exc.code or "").rsplit(":", 1)[-1]
        if code.startswith("Server"):
            raise TransientError(
                exc.message, code=f"soap_{code}", retry_after=_retry_after(exc.detail)
            ) from exc
        raise PermanentError(exc.message, code=f"soap_{code or 'Client'}") from exc
    except zeep.exceptions.TransportError as exc:
        if exc.status_code >= 500 or exc.status_code == 429:
            raise TransientError(f"HTTP {exc.status_code}", code=f"soap_http_{exc.status_code}") from exc
        raise PermanentError(f"HTTP {exc.status_code}", code=f"soap_http_{exc.status_code}") from exc
    except requests.Timeout as exc:
        raise TransientError("no answer within the insurer's timeout", code="soap_timeout") from exc
    except requests.ConnectionError as exc:
        raise TransientError(str(exc), code="soap_connection_error") from exc
    except zeep.exceptions.XMLSyntaxError as exc:
        raise TransientError(
            "the insurer answered something that is not XML", code="soap_bad_response"
        ) from exc


def _operation(insurer, name: str):
    operations = {**OPERATIONS, **(insurer.connection or {}).get("operations", {})}
    return getattr(_client(insurer).service, operations[name])


def _plain(value) -> list[dict]:
    return [dict(row) for row in serialize_object(value or [], target_cls=dict)]


def _item_result(row: dict) -> ItemResult:
    data = {key: row[key] for key in DATA_FIELDS if row.get(key) is not None}
    return item_result_from({**row, "data": data})


def _logged(insurer, *, operation: str, request, call, dispatch=None, tracking_ids: Sequence[str] = ()):
    """Call, then record the exchange whatever happened; returns the plain rows."""
    started, status, rows = time.monotonic(), "ok", None
    try:
        rows = _plain(_call(call))
        return rows
    except (TransientError, PermanentError) as exc:
        status = exc.code
        raise
    finally:
        exchange_record(
            insurer=insurer,
            operation=operation,
            request=request,
            response=rows,
            status=status,
            started=started,
            dispatch_key=dispatch.idempotency_key if dispatch else "",
            dispatch_id=dispatch.pk if dispatch else None,
            tracking_ids=tracking_ids,
        )


class SoapAdapter:
    def send(self, dispatch, items: Sequence) -> list[ItemResult]:
        insurer = dispatch.insurer
        payloads = [{**item.payload, "item_key": item.idempotency_key} for item in items]
        header = {"idempotency_key": dispatch.idempotency_key}
        operation = _operation(insurer, "send")
        rows = _logged(
            insurer,
            operation=OPERATIONS["send"],
            request={"DispatchHeader": header, "items": payloads},
            call=lambda: operation(payloads, _soapheaders={"DispatchHeader": header}),
            dispatch=dispatch,
            tracking_ids=[item.reference for item in items],
        )
        return [_item_result(row) for row in rows]

    def status_fetch(self, insurer, references: Sequence[str]) -> list[ItemResult]:
        operation = _operation(insurer, "status")
        results: list[ItemResult] = []
        for start in range(0, len(references), STATUS_BATCH):
            batch = list(references[start : start + STATUS_BATCH])
            rows = _logged(
                insurer,
                operation=OPERATIONS["status"],
                request={"references": batch},
                call=lambda batch=batch: operation({"string": batch}),
                tracking_ids=batch,
            )
            results += [_item_result(row) for row in rows if row.get("outcome") != "unknown"]
        return results

    def confirmations_fetch(self, insurer) -> list[ItemResult]:
        """SOAP insurers are polled: what the insurer confirmed since it accepted."""
        operation = _operation(insurer, "confirmations")
        rows = _logged(insurer, operation=OPERATIONS["confirmations"], request={}, call=operation)
        return [_item_result(row) for row in rows]

    def roster_fetch(self, insurer) -> list[dict]:
        operation = _operation(insurer, "roster")
        policy_number = (insurer.connection or {}).get("policy_number")
        return _logged(
            insurer,
            operation=OPERATIONS["roster"],
            request={"policy_number": policy_number},
            call=lambda: operation(policy_number),
        )

    def statement_fetch(self, insurer, period_start: date, period_end: date) -> list[dict]:
        operation = _operation(insurer, "statement")
        return _logged(
            insurer,
            operation=OPERATIONS["statement"],
            request={"period_start": period_start.isoformat(), "period_end": period_end.isoformat()},
            call=lambda: operation(period_start, period_end),
        )
