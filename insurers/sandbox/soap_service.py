"""The sandbox insurer's SOAP 1.1 service: a real WSDL served by spyne over WSGI.

Operations (namespace `NAMESPACE`, WSDL at `/?wsdl`): `SubmitEndorsements(items)` with
the dispatch's idempotency key in the `DispatchHeader` SOAP header,
`EndorsementStatus(references)`, `ConfirmationsDue()` (what the insurer has confirmed
since it accepted), `MemberRoster(policy_number)` and `AccountStatement(period_start,
period_end)`. Each calls the protocol-free engine under its switches.

Faults: `Client.*` for what a retry cannot fix (a bad request, authentication),
`Server.*` for what it may (unavailable, timeout, throttled with `retry_after` seconds in
the fault detail). A WS-Security UsernameToken, when the request
carries one, must match `SANDBOX_SOAP_USERNAME`/`SANDBOX_SOAP_PASSWORD` (text or digest);
`SANDBOX_SOAP_REQUIRE_WSSE` makes it mandatory.
"""

import base64
import hashlib
import hmac
import socketserver
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from spyne import Application, ComplexModel, Date, Fault, Integer, Iterable, Service, Unicode, rpc
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

NAMESPACE = "urn:ems:sandbox:endorsements"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = "#PasswordDigest"


class DispatchHeader(ComplexModel):
    __namespace__ = NAMESPACE
    idempotency_key = Unicode(min_occurs=1)


class Item(ComplexModel):
    __namespace__ = NAMESPACE
    item_key = Unicode(min_occurs=1)
    reference = Unicode(min_occurs=1)
    action = Unicode(min_occurs=1)
    policy_number = Unicode
    employee_code = Unicode
    relation = Unicode
    first_name = Unicode
    last_name = Unicode
    date_of_birth = Unicode
    gender = Unicode
    email = Unicode
    phone = Unicode
    plan_code = Unicode
    sum_insured = Integer
    effective_date = Unicode
    premium = Integer
    currency = Unicode


class ItemOutcome(ComplexModel):
    __namespace__ = NAMESPACE
    reference = Unicode
    outcome = Unicode
    insurer_reference = Unicode
    insurer_member_id = Unicode
    insurer_premium = Integer
    code = Unicode
    reason = Unicode
    effective_date = Unicode
    sum_insured = Integer


class RosterMember(ComplexModel):
    __namespace__ = NAMESPACE
    insurer_member_id = Unicode
    policy_number = Unicode
    employee_code = Unicode
    relation = Unicode
    first_name = Unicode
    last_name = Unicode
    date_of_birth = Unicode
    plan_code = Unicode
    sum_insured = Integer
    start = Unicode
    end = Unicode


class StatementLine(ComplexModel):
    __namespace__ = NAMESPACE
    date = Unicode
    reference = Unicode
    kind = Unicode
    amount = Integer
    balance = Integer


def _fields(model: type[ComplexModel], row: dict) -> dict:
    names = model.get_flat_type_info(model)
    return {name: (None if row.get(name) in ("", None) else row.get(name)) for name in names}


def _outcomes(rows: list[dict]) -> list[ItemOutcome]:
    """The engine's results, its `data` (effective date...) as fields of their own."""
    return [ItemOutcome(**_fields(ItemOutcome, {**row, **(row.get("data") or {})})) for row in rows]


def _username_token(ctx) -> tuple[str, str, str, str, str] | None:
    """(username, password, type, nonce, created) of the request's UsernameToken."""
    for element in ctx.in_header_doc or ():
        token = element.find(f"{{{WSSE}}}UsernameToken") if element.tag == f"{{{WSSE}}}Security" else None
        if token is None:
            continue
        password = token.find(f"{{{WSSE}}}Password")
        return (
            token.findtext(f"{{{WSSE}}}Username") or "",
            password.text if password is not None else "",
            password.get("Type", "") if password is not None else "",
            token.findtext(f"{{{WSSE}}}Nonce") or "",
            token.findtext(f"{{{WSU}}}Created") or "",
        )
    return None


def _token_valid(token, username: str, password: str) -> bool:
    given_user, given, kind, nonce, created = token
    if kind.endswith(PASSWORD_DIGEST):
        raw = base64.b64decode(nonce) + created.encode() + password.encode()
        expected = base64.b64encode(hashlib.sha1(raw).digest()).decode()
    else:
        expected = password
    return hmac.compare_digest(given_user, username) and hmac.compare_digest(given or "", expected)


def _switched(engine, call):
    """Run an engine call under the switches: latency, then maybe a fault instead of (or after) it."""
    switches = engine.switches_get()
    time.sleep(int(switches["latency_ms"]) / 1000)
    fault = engine.fault_pick(switches)
    if fault == "error":
        raise Fault(faultcode="Server.Unavailable", faultstring="the insurer's system is unavailable")
    if fault == "timeout":
        time.sleep(float(switches["timeout_seconds"]))
        raise Fault(faultcode="Server.Timeout", faultstring="the insurer's system did not answer in time")
    if fault == "throttle":
        raise Fault(
            faultcode="Server.Throttled",
            faultstring="too many requests",
            detail={"retry_after": str(switches["retry_after_seconds"])},
        )
    try:
        answer = call()
    except (KeyError, ValueError, TypeError) as exc:
        raise Fault(faultcode="Client.BadRequest", faultstring=str(exc)) from exc
    if fault == "lose_response":
        raise Fault(faultcode="Server.Unavailable", faultstring="the insurer's system is unavailable")
    return answer


def application_build(*, engine, username: str, password: str, wsse_required: bool) -> WsgiApplication:
    """The WSGI app over `engine` (the module `insurers.sandbox.engine` in `run_sandbox`)."""

    def guarded(call):
        return _switched(engine, call)

    class EndorsementService(Service):
        __in_header__ = DispatchHeader

        @rpc(Iterable(Item, min_occurs=1), _returns=Iterable(ItemOutcome), _body_style="bare")
        def SubmitEndorsements(ctx, items):
            header = ctx.in_header
            if header is None or not header.idempotency_key:
                raise Fault(
                    faultcode="Client.MissingIdempotencyKey", faultstring="DispatchHeader is required"
                )
            payloads = [_fields(Item, item.as_dict()) for item in items]
            return _outcomes(guarded(lambda: engine.receive(payloads, header.idempotency_key)))

        @rpc(Iterable(Unicode), _returns=Iterable(ItemOutcome))
        def EndorsementStatus(ctx, references):
            return _outcomes(guarded(lambda: engine.status(list(references or ()))))

        @rpc(_returns=Iterable(ItemOutcome))
        def ConfirmationsDue(ctx):
            return _outcomes(guarded(engine.confirmations_due))

        @rpc(Unicode, _returns=Iterable(RosterMember))
        def MemberRoster(ctx, policy_number):
            rows = guarded(lambda: engine.roster(policy_number or None))
            return [RosterMember(**_fields(RosterMember, row)) for row in rows]

        @rpc(Date(min_occurs=1), Date(min_occurs=1), _returns=Iterable(StatementLine))
        def AccountStatement(ctx, period_start, period_end):
            rows = guarded(lambda: engine.statement(period_start, period_end))
            return [StatementLine(**_fields(StatementLine, row)) for row in rows]

    def authenticate(ctx):
        token = _username_token(ctx)
        if token is None and wsse_required:
            raise Fault(
                faultcode="Client.Authentication", faultstring="a WS-Security UsernameToken is required"
            )
        if token is not None and not _token_valid(token, username, password):
            raise Fault(faultcode="Client.Authentication", faultstring="the UsernameToken is not valid")

    EndorsementService.event_manager.add_listener("method_call", authenticate)
    application = Application(
        [EndorsementService],
        tns=NAMESPACE,
        name="SandboxInsurer",
        in_protocol=Soap11(validator="lxml"),
        out_protocol=Soap11(),
    )
    return WsgiApplication(application)


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 64


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # the engine keeps the record of what was received
        pass


class SoapFace:
    """The SOAP face of `run_sandbox`: a threading WSGI server on its own thread."""

    def __init__(self, *, host: str, port: int, wsgi_app):
        self.server = make_server(
            host, port, wsgi_app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, name=f"sandbox-soap-{port}", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def soap_start(options: dict) -> tuple[str, SoapFace]:
    """`run_sandbox`'s starter: the service over the engine, WSDL at `<url>/?wsdl`."""
    from django.conf import settings

    from insurers.sandbox import engine

    wsgi_app = application_build(
        engine=engine,
        username=settings.SANDBOX_SOAP_USERNAME,
        password=settings.SANDBOX_SOAP_PASSWORD,
        wsse_required=settings.SANDBOX_SOAP_REQUIRE_WSSE,
    )
    face = SoapFace(host=options["host"], port=options["soap_port"], wsgi_app=wsgi_app)
    return f"http://{options['host']}:{options['soap_port']}/", face
