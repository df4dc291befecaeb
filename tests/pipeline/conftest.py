"""Pipeline test helpers: an employer's policy at an insurer, validated requests, a funded EA.

The sandbox insurer (`sandbox`, from tests/insurers/conftest.py) is the real process over
its real protocols. Requests are stored VALIDATED the way validation leaves them (the
state machine's own move from RECEIVED), with a member payload the sandbox accepts.
"""

import datetime
import uuid

import pytest
from django.conf import settings

from bench.stack import RedisServer, Stack
from endorsements.models import EndorsementRequest, EndorsementState
from endorsements.transitions import endorsement_transition
from ledger import approvals
from ledger import services as ledger
from ledger.models import Account
from tests.factories import InsurerFactory, PolicyFactory
from tests.insurers.conftest import sandbox, sandbox_server  # noqa: F401 - the session's sandbox
from tests.insurers.gateway_items import sftp_insurer_at
from tests.ledger.conftest import APPROVER_CODENAMES, user_with_ledger_permissions
from tests.servers import database_url

S = EndorsementState


@pytest.fixture
def approver(db):
    return user_with_ledger_permissions(*APPROVER_CODENAMES, is_staff=True)


def rest_insurer_at(server, **fields):
    fields.setdefault("dispatch_window_seconds", 1)
    fields.setdefault("request_timeout_seconds", 2)
    fields.setdefault("retry_base_seconds", 1)
    fields.setdefault("credentials", {"bearer_token": server.token})
    return InsurerFactory(protocol="REST", endpoint_url=server.faces["rest"], **fields)


def soap_insurer_at(server, **fields):
    fields.setdefault("dispatch_window_seconds", 1)
    return InsurerFactory(
        protocol="SOAP",
        endpoint_url=f"{server.faces['soap']}?wsdl",
        credentials={"username": settings.SANDBOX_SOAP_USERNAME, "password": settings.SANDBOX_SOAP_PASSWORD},
        connection={"policy_number": "POL-GW-1"},
        request_timeout_seconds=2,
        **fields,
    )


def sftp_insurer(server, **fields):
    fields.setdefault("dispatch_window_seconds", 1)
    return sftp_insurer_at(server, **fields)


def policy_at(insurer, employer=None):
    kwargs = {"insurer": insurer, "number": f"POL-{uuid.uuid4().hex[:8].upper()}"}
    if employer is not None:
        kwargs["employer"] = employer
    return PolicyFactory(**kwargs)


def validated(policy, *, premium: int, kind: str = "ADD", code: str | None = None) -> EndorsementRequest:
    """One VALIDATED request (premium in signed minor units incl. tax)."""
    code = code or f"E{uuid.uuid4().hex[:6].upper()}"
    request = EndorsementRequest.objects.create(
        employer=policy.employer,
        policy=policy,
        type=kind,
        member_data={
            "employee_code": code,
            "relation": "SELF",
            "first_name": "Asha",
            "last_name": "Rao",
            "date_of_birth": "1990-05-01",
            "gender": "F",
            "plan_code": "GOLD",
            "sum_insured": 500000,
        },
        effective_date=datetime.date(2026, 6, 1),
        premium_amount=premium,
        tax_amount=0,
        content_hash=uuid.uuid4().hex,
        member_key=f"{code}:SELF",
        source="API",
        state=S.RECEIVED,
    )
    endorsement_transition(endorsement=request, to_state=S.VALIDATED, actor="validation", follow_up=False)
    return request


def account_of(policy) -> Account:
    return ledger.account_open(employer_id=policy.employer_id, insurer_id=policy.insurer_id)


def fund(policy, amount: int, approver) -> Account:
    account = account_of(policy)
    topup = approvals.account_topup(
        account_id=account.pk,
        amount=amount,
        payment_reference=f"UTR-{uuid.uuid4().hex[:8]}",
        idempotency_key=f"fund-{uuid.uuid4().hex}",
        requested_by="client:test",
    )
    approvals.topup_decide(topup_id=topup.pk, approver=approver, approve=True)
    return Account.objects.get(pk=account.pk)


def states(*requests) -> list[str]:
    by_id = dict(
        EndorsementRequest.objects.filter(pk__in=[r.pk for r in requests]).values_list("pk", "state")
    )
    return [by_id[r.pk] for r in requests]


# --- the deployed stack (bench/stack.py) for end-to-end and fault tests --------------


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test's own (the fault tests restart it)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stack(tmp_path, private_redis, mongo_server, kafka_server):
    """The web server and a Celery worker on the test database and the private Redis."""
    running = Stack(tmp_path, private_redis, database_url=database_url()).start()
    yield running
    running.stop()
