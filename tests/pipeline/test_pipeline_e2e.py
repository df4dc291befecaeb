"""End to end: the API as deployed, a real Celery worker on a private Redis, the sandbox insurer
over REST, SOAP and SFTP, PostgreSQL, the Kafka-wire broker and the Mongo-wire audit store.

HR's client posts an ADD, a DELETE and a CORRECTION; nothing else is called by the test.
Each request must end ACTIVE, its cover as it says, with the EA exact to the paisa (computed here
from the requests' own premiums and the insurer's published rounding, not read back from
the code under test), one Kafka event per recorded transition and audit documents in MongoDB.
"""

import datetime
import json
import time
import urllib.request

import pytest
from django.db import connection

from ems.audit import AUDIT_COLLECTION
from ems.models import OutboxEvent
from endorsements.models import Coverage, EndorsementRequest, EndorsementTransition
from insurers.models import Dispatch
from insurers.sandbox.webhook_sender import webhook_targets_write
from ledger.models import Account, Entry
from tests.endorsements.conftest import book_create
from tests.factories import CoverageFactory, MemberFactory, api_client_create
from tests.pipeline.conftest import (
    S,
    account_of,
    fund,
    rest_insurer_at,
    sftp_insurer,
    soap_insurer_at,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
MAKERS = {"REST": rest_insurer_at, "SOAP": soap_insurer_at, "SFTP": sftp_insurer}
# Where a request stops; effective today, a confirmed one goes on to ACTIVE.
FINAL = {S.ACTIVE, S.REJECTED, S.INSURER_REJECTED, S.CANCELLED, S.SUPERSEDED, S.FAILED}


def insurer_charge(premium: int) -> int:
    """The sandbox's published pricing: debits in whole rupees half up, refunds rounded down."""
    return -(abs(premium) // 100 * 100) if premium < 0 else (premium + 50) // 100 * 100


def book_at(insurer, employer, today):
    """The employer's policy at `insurer` with its plan and rate card (tests/endorsements), and two
    covered employees: L-1 to delete, C-1 to correct."""
    book = book_create(employer, today, insurer=insurer, number=f"E2E-{insurer.protocol}-{insurer.pk}")
    for code in ("L-1", "C-1"):
        member = MemberFactory(employer=employer, employee_code=code, relation="SELF")
        CoverageFactory(
            member=member,
            plan=book.plan,
            policy=book.policy,
            sum_insured=500000,
            start_date=book.policy.start_date,
            status=Coverage.Status.ACTIVE,
        )
    return book.policy


def http_json(method: str, url: str, body: dict, token: str = "") -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def hr_token(stack, employer) -> str:
    client, secret = api_client_create(employer=employer)
    status, body = http_json(
        "POST",
        f"{stack.web_url}/api/v1/auth/token",
        {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret},
    )
    assert status == 200, body
    return body["access_token"]


def submit(stack, token, policy, today, rows) -> list[str]:
    tracking_ids = []
    for index, row in enumerate(rows):
        status, body = http_json(
            "POST",
            f"{stack.web_url}/api/v1/endorsements/",
            {"policy_number": policy.number, "effective_date": today.isoformat(), **row},
            token,
        )
        assert status in (201, 202), body
        tracking_ids.append(body["tracking_id"])
        assert index == len(tracking_ids) - 1
    return tracking_ids


def wait_final(stack, tracking_ids, *, timeout: float = 90) -> dict[str, EndorsementRequest]:
    deadline = time.monotonic() + timeout
    while True:
        rows = {e.tracking_id: e for e in EndorsementRequest.objects.filter(tracking_id__in=tracking_ids)}
        if len(rows) == len(tracking_ids) and all(e.state in FINAL for e in rows.values()):
            return rows
        if time.monotonic() > deadline:
            states = {t: rows[t].state if t in rows else "missing" for t in tracking_ids}
            dispatches = list(
                Dispatch.objects.filter(items__reference__in=tracking_ids)
                .distinct()
                .values_list("pk", "state", "attempts", "next_attempt_at", "last_error")
            )
            pytest.fail(f"not final within {timeout} s: {states}\n{dispatches}\n{stack.logs()}")
        time.sleep(0.3)


def wait_relayed(timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while OutboxEvent.objects.filter(delivered_at__isnull=True).exists():
        if time.monotonic() > deadline:
            pytest.fail("the outbox was not relayed")
        time.sleep(0.3)


def kafka_events(kafka_server, tracking_ids) -> list[dict]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=[kafka_server.bootstrap_servers],
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
        value_deserializer=json.loads,
    )
    partitions = [
        TopicPartition("ems.endorsements", p) for p in consumer.partitions_for_topic("ems.endorsements")
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    wanted = set(tracking_ids)
    events = [m.value for m in consumer if (m.key or b"").decode() in wanted]
    consumer.close()
    return events


ROWS = [
    {
        "action": "ADD",
        "employee_code": "J-1",
        "relation": "SELF",
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": "1990-05-17",
        "gender": "F",
        "email": "asha.rao@example.com",
        "phone": "+919812345678",
        "plan_code": "GOLD",
        "sum_insured": "500000",
    },
    {"action": "DELETE", "employee_code": "L-1", "relation": "SELF"},
    {"action": "CORRECTION", "employee_code": "C-1", "relation": "SELF", "sum_insured": "300000"},
]


@pytest.mark.parametrize("protocol", ["REST", "SOAP", "SFTP"])
def test_add_delete_and_correction_travel_to_the_insurer_and_back(
    stack, sandbox, approver, employer, mongo_db, kafka_server, protocol
):
    today = datetime.date.today()
    insurer = MAKERS[protocol](sandbox)
    policy = book_at(insurer, employer, today)
    fund(policy, 100_000_00, approver)
    posted_before = account_of(policy).posted
    rows = [dict(r) for r in ROWS]
    rows[0]["date_of_joining"] = (today - datetime.timedelta(days=5)).isoformat()

    tracking_ids = submit(stack, hr_token(stack, employer), policy, today, rows)
    final = wait_final(stack, tracking_ids)

    assert [final[t].state for t in tracking_ids] == [S.ACTIVE] * 3, {
        t: (final[t].state, final[t].rejection_reasons, final[t].last_error) for t in tracking_ids
    }
    joiner, leaver, correction = (final[t] for t in tracking_ids)
    covers = {
        c.member.employee_code: c for c in Coverage.objects.filter(policy=policy).select_related("member")
    }
    assert (covers["J-1"].status, covers["J-1"].start_date, covers["J-1"].sum_insured) == (
        Coverage.Status.ACTIVE,
        today,
        500000,
    )
    assert covers["J-1"].insurer_member_id == joiner.insurer_member_id != ""
    assert (covers["L-1"].status, covers["L-1"].end_date) == (
        Coverage.Status.ENDED,
        today - datetime.timedelta(days=1),
    )
    assert (covers["C-1"].status, covers["C-1"].sum_insured) == (Coverage.Status.ACTIVE, 300000)
    assert joiner.premium_amount > 0 > leaver.premium_amount
    assert correction.premium_amount < 0
    expected = posted_before - sum(insurer_charge(final[t].premium_amount) for t in tracking_ids)
    account = Account.objects.get(pk=account_of(policy).pk)
    assert (account.posted, account.held) == (expected, 0)
    kinds = sorted(Entry.objects.filter(reference__in=tracking_ids).values_list("reference", "kind"))
    assert kinds == sorted(
        [(joiner.tracking_id, "CAPTURE"), (leaver.tracking_id, "REFUND"), (correction.tracking_id, "REFUND")]
    )
    assert joiner.insurer_member_id and joiner.insurer_reference

    wait_relayed()
    events = kafka_events(kafka_server, tracking_ids)
    moves = EndorsementTransition.objects.filter(endorsement__tracking_id__in=tracking_ids).count()
    assert len(events) >= moves
    audited = mongo_db[AUDIT_COLLECTION].count_documents({"object_id": {"$in": tracking_ids}})
    assert audited >= len(tracking_ids) * 3
    connection.close()


def test_webhook_confirmations_twice_and_out_of_order_move_money_once(
    stack, sandbox, approver, employer, mongo_db
):
    """The insurer accepts now and confirms later by signed webhook, every webhook twice, reversed."""
    today = datetime.date.today()
    insurer = rest_insurer_at(sandbox, webhook_secret_primary="whsec_e2e_0123456789abcdef")
    policy = book_at(insurer, employer, today)
    fund(policy, 100_000_00, approver)
    webhook_targets_write(
        {
            "url": stack.web_url,
            "insurers": {insurer.code: {"insurer_id": insurer.pk, "secret": "whsec_e2e_0123456789abcdef"}},
        },
        data_dir=sandbox.data_dir,
    )
    sandbox.switches(
        answer_mode="webhook", webhook_delay_ms=100, webhook_duplicates=True, webhook_out_of_order=True
    )
    rows = [dict(r) for r in ROWS]
    rows[0]["date_of_joining"] = (today - datetime.timedelta(days=5)).isoformat()

    tracking_ids = submit(stack, hr_token(stack, employer), policy, today, rows)
    final = wait_final(stack, tracking_ids)

    assert {final[t].state for t in tracking_ids} == {S.ACTIVE}
    expected = 100_000_00 - sum(insurer_charge(final[t].premium_amount) for t in tracking_ids)
    account = Account.objects.get(pk=account_of(policy).pk)
    assert (account.posted, account.held) == (expected, 0)
    assert Entry.objects.filter(reference__in=tracking_ids).count() == 3
    connection.close()


def wait_states(stack, wanted: dict[str, str], *, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = dict(
            EndorsementRequest.objects.filter(tracking_id__in=list(wanted)).values_list(
                "tracking_id", "state"
            )
        )
        if states == wanted:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not {wanted} within {timeout} s: {states}\n{stack.logs()}")
        time.sleep(0.3)


def test_additions_that_cannot_be_paid_park_and_a_top_up_wakes_the_oldest_first(
    stack, sandbox, approver, employer
):
    today = datetime.date.today()
    insurer = rest_insurer_at(sandbox)
    policy = book_at(insurer, employer, today)
    joined = (today - datetime.timedelta(days=5)).isoformat()
    rows = [
        dict(ROWS[0], employee_code=f"P-{n}", email=f"p{n}@example.com", date_of_joining=joined)
        for n in range(3)
    ]
    tracking_ids = submit(stack, hr_token(stack, employer), policy, today, rows)
    wait_states(stack, dict.fromkeys(tracking_ids, S.ON_HOLD_FUNDS))  # the EA is empty

    premiums = [EndorsementRequest.objects.get(tracking_id=t).premium_amount for t in tracking_ids]
    owed = insurer_charge(premiums[0]) + insurer_charge(premiums[1])
    fund(policy, owed, approver)  # enough for the two oldest at the insurer's price, not the third

    wait_states(
        stack, {tracking_ids[0]: S.ACTIVE, tracking_ids[1]: S.ACTIVE, tracking_ids[2]: S.ON_HOLD_FUNDS}
    )
    account = Account.objects.get(pk=account_of(policy).pk)
    assert (account.posted, account.held) == (0, 0)
    assert sorted(Coverage.objects.filter(policy=policy).values_list("member__employee_code", flat=True)) == [
        "C-1",
        "L-1",
        "P-0",
        "P-1",
    ]
    connection.close()
