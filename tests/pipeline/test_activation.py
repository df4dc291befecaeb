"""Activation (`endorsements.pipeline.activation`): confirmed requests become the member list.

Requests are validated by the real rules (`endorsement_submit`, validation on commit) and
confirmed through the state machine; the sweep runs as the beat task does. The policy
runs from T-120 to T+244 (365 days, T = today); the employee is 30 (₹12,000 a year at
5 lakh, 18% tax).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from celery import current_app
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from endorsements import locks
from endorsements.models import Coverage, EndorsementRequest, EndorsementTransition, Member
from endorsements.pipeline.activation import endorsements_activate_due
from endorsements.tasks import activate_due_task
from tests.endorsements.conftest import book_create
from tests.pipeline.activation_helpers import (
    S,
    confirmed,
    correction_row,
    days,
    deletion_row,
    employee_row,
    spouse_row,
    submitted,
)
from tests.servers import database_url, stop, wait_for_other_sessions_to_end


@pytest.fixture
def book(employer):
    return book_create(employer, timezone.localdate())


@pytest.fixture
def submit(book):
    return lambda row: submitted(book, row)


def covers(code: str) -> list[tuple]:
    return list(
        Coverage.objects.filter(member__employee_code=code)
        .order_by("pk")
        .values_list(
            "member__relation",
            "plan__code",
            "sum_insured",
            "start_date",
            "end_date",
            "status",
            "insurer_member_id",
        )
    )


def test_an_addition_creates_the_employee_and_their_cover_once(book, submit):
    T = book.today
    add = confirmed(submit(employee_row(book)), insurer_member_id="INS-M-1")
    assert (add.premium_amount, add.tax_amount) == (950_465, 144_986)  # 805,479 + 18%

    activated = endorsements_activate_due()

    assert [r.tracking_id for r in activated] == [add.tracking_id]
    member = Member.objects.get(employer=book.employer, employee_code="E1001")
    assert (member.relation, member.primary_id, member.first_name, member.last_name) == (
        "SELF",
        None,
        "Asha",
        "Rao",
    )
    assert (member.email, member.phone, member.date_of_joining) == (
        "asha.rao@example.com",
        "+919812345678",
        T - days(5),
    )
    assert covers("E1001") == [("SELF", "GOLD", 500000, T, book.policy.end_date, "ACTIVE", "INS-M-1")]
    add.refresh_from_db()
    assert (add.state, add.member_id) == (S.ACTIVE, member.pk)
    assert add.activated_at is not None
    assert list(add.transitions.order_by("id").values_list("from_state", "to_state", "actor"))[-1] == (
        "CONFIRMED",
        "ACTIVE",
        "pipeline:activation",
    )

    # Given it ran, a second run finds nothing and writes nothing.
    history = EndorsementTransition.objects.count()
    assert endorsements_activate_due() == []
    assert activate_due_task.delay().get() == 0
    assert covers("E1001") == [("SELF", "GOLD", 500000, T, book.policy.end_date, "ACTIVE", "INS-M-1")]
    assert (Member.objects.count(), EndorsementTransition.objects.count()) == (1, history)


def test_a_request_waits_for_its_effective_date(book, submit):
    T = book.today
    add = confirmed(submit(employee_row(book, effective_date=(T + days(10)).isoformat())))

    assert endorsements_activate_due(today=T + days(9)) == []
    assert (EndorsementRequest.objects.get(pk=add.pk).state, Coverage.objects.count()) == (S.CONFIRMED, 0)
    assert [r.pk for r in endorsements_activate_due(today=T + days(10))] == [add.pk]
    assert covers("E1001") == [("SELF", "GOLD", 500000, T + days(10), book.policy.end_date, "ACTIVE", "")]


def test_later_requests_validate_against_the_activated_truth(book, submit):
    T = book.today
    confirmed(submit(employee_row(book)), insurer_member_id="INS-M-1")
    endorsements_activate_due()

    # Given the employee is covered: a second addition (other content) is refused ...
    again = submit(employee_row(book, sum_insured="300000"))
    assert again.state == S.REJECTED
    assert [(r["field"], r["code"]) for r in again.rejection_reasons] == [
        ("employee_code", "already_covered")
    ]
    # ... and a deletion validates, refunded from its effective date (the first day without
    # cover): 1,200,000 × 215 / 365 = 706,849 and tax 127,233 back.
    deletion = submit(deletion_row(book, code="E1001", effective=T + days(30)))
    assert deletion.state == S.VALIDATED
    assert (deletion.premium_amount, deletion.tax_amount) == (-834_082, -127_233)

    confirmed(deletion)
    assert endorsements_activate_due(today=T + days(29)) == []
    assert [r.pk for r in endorsements_activate_due(today=T + days(30))] == [deletion.pk]
    assert covers("E1001") == [("SELF", "GOLD", 500000, T, T + days(29), "ENDED", "INS-M-1")]

    # When the cover has ended, the employee can be added again (a new cover, the same member).
    back = confirmed(
        submit(employee_row(book, effective_date=(T + days(40)).isoformat())), insurer_member_id="M2"
    )
    assert back.state == S.CONFIRMED
    endorsements_activate_due(today=T + days(40))
    assert covers("E1001") == [
        ("SELF", "GOLD", 500000, T, T + days(29), "ENDED", "INS-M-1"),
        ("SELF", "GOLD", 500000, T + days(40), book.policy.end_date, "ACTIVE", "M2"),
    ]
    assert Member.objects.filter(employee_code="E1001").count() == 1


def test_a_deletion_effective_on_the_cover_start_voids_it(book, submit):
    T = book.today
    confirmed(submit(employee_row(book)), insurer_member_id="INS-M-1")
    endorsements_activate_due()
    deletion = submit(deletion_row(book, code="E1001", effective=T))
    # The whole premium back: 805,479 + 144,986.
    assert (deletion.state, deletion.premium_amount) == (S.VALIDATED, -950_465)
    confirmed(deletion)

    assert [r.pk for r in endorsements_activate_due()] == [deletion.pk]
    # Never in force: it ends the day before it starts.
    assert covers("E1001") == [("SELF", "GOLD", 500000, T, T - days(1), "VOID", "INS-M-1")]


def test_a_correction_changes_the_fields_it_names(book, submit):
    T = book.today
    confirmed(submit(employee_row(book)), insurer_member_id="INS-M-1")
    endorsements_activate_due()
    correction = confirmed(
        submit(
            correction_row(
                book, code="E1001", effective=T + days(3), last_name="Rao-Iyer", sum_insured="300000"
            )
        )
    )
    # (900,000 - 1,200,000) × 242 / 365 = -198,904, tax -35,803
    assert (correction.premium_amount, correction.tax_amount) == (-234_707, -35_803)

    assert [r.pk for r in endorsements_activate_due(today=T + days(3))] == [correction.pk]
    member = Member.objects.get(employee_code="E1001")
    assert (member.first_name, member.last_name, member.email) == ("Asha", "Rao-Iyer", "asha.rao@example.com")
    assert covers("E1001") == [("SELF", "GOLD", 300000, T, book.policy.end_date, "ACTIVE", "INS-M-1")]


def test_requests_for_one_member_apply_in_effective_date_order(book, submit):
    T = book.today
    confirmed(submit(employee_row(book)), insurer_member_id="INS-M-1")
    endorsements_activate_due()
    # Given a deletion (effective T+5) sent before a correction effective earlier (T+3) ...
    deletion = confirmed(submit(deletion_row(book, code="E1001", effective=T + days(5))))
    correction = confirmed(
        submit(correction_row(book, code="E1001", effective=T + days(3), sum_insured="300000"))
    )
    assert deletion.pk < correction.pk

    # ... one sweep applies the correction first: the cover that ends carries its sum insured.
    activated = endorsements_activate_due(today=T + days(5))

    assert [r.pk for r in activated] == [correction.pk, deletion.pk]
    assert covers("E1001") == [("SELF", "GOLD", 300000, T, T + days(4), "ENDED", "INS-M-1")]


def test_an_employee_and_a_dependant_added_together_are_linked(book, submit):
    T = book.today
    employee = confirmed(submit(employee_row(book)), insurer_member_id="INS-M-1")
    spouse = confirmed(submit(spouse_row(book)), insurer_member_id="INS-M-2")

    assert {r.pk for r in endorsements_activate_due()} == {employee.pk, spouse.pk}

    asha = Member.objects.get(employee_code="E1001", relation="SELF")
    ravi = Member.objects.get(employee_code="E1001", relation="SPOUSE")
    assert (ravi.primary_id, ravi.first_name, ravi.date_of_birth.isoformat(), ravi.email) == (
        asha.pk,
        "Ravi",
        spouse_row(book)["date_of_birth"],
        "",
    )
    assert covers("E1001") == [
        ("SELF", "GOLD", 500000, T, book.policy.end_date, "ACTIVE", "INS-M-1"),
        ("SPOUSE", "GOLD", 500000, T, book.policy.end_date, "ACTIVE", "INS-M-2"),
    ]
    assert EndorsementRequest.objects.get(pk=spouse.pk).member_id == ravi.pk


def test_an_employees_deletion_ends_the_dependants_cover_through_its_linked_deletion(book, submit):
    T = book.today
    confirmed(submit(employee_row(book)), insurer_member_id="INS-M-1")
    confirmed(submit(spouse_row(book)), insurer_member_id="INS-M-2")
    endorsements_activate_due()

    employee = submit(deletion_row(book, code="E1001", effective=T + days(30)))
    spouse = EndorsementRequest.objects.get(linked_to=employee)
    # Priced as the spouse's own deletion would be: 706,849 + tax 127,233 back.
    assert (spouse.state, spouse.premium_amount, spouse.effective_date) == (
        S.VALIDATED,
        -834_082,
        T + days(30),
    )
    confirmed(employee)
    confirmed(spouse)

    assert {r.pk for r in endorsements_activate_due(today=T + days(30))} == {employee.pk, spouse.pk}
    assert covers("E1001") == [
        ("SELF", "GOLD", 500000, T, T + days(29), "ENDED", "INS-M-1"),
        ("SPOUSE", "GOLD", 500000, T, T + days(29), "ENDED", "INS-M-2"),
    ]


def test_of_two_confirmed_additions_for_one_employee_the_later_one_holds_the_cover(book, submit):
    T = book.today
    # Given a first addition already sent (so not superseded) and a second one validated after it
    first = submit(employee_row(book))
    confirmed(first, insurer_member_id="M-FIRST")
    second = confirmed(
        submit(employee_row(book, effective_date=(T + days(2)).isoformat())), insurer_member_id="M-SECOND"
    )

    assert [r.pk for r in endorsements_activate_due(today=T + days(2))] == [first.pk, second.pk]
    assert covers("E1001") == [
        ("SELF", "GOLD", 500000, T, T + days(1), "ENDED", "M-FIRST"),
        ("SELF", "GOLD", 500000, T + days(2), book.policy.end_date, "ACTIVE", "M-SECOND"),
    ]


def test_a_dependant_waits_for_its_employee_to_become_a_member(book, submit):
    T = book.today
    # Given the spouse's addition takes effect before the employee's ...
    employee = confirmed(submit(employee_row(book, effective_date=(T + days(5)).isoformat())))
    spouse = confirmed(submit(spouse_row(book)))

    # ... it stays CONFIRMED until the employee is a member, then starts on its own date.
    assert endorsements_activate_due() == []
    assert (EndorsementRequest.objects.get(pk=spouse.pk).state, Member.objects.count()) == (S.CONFIRMED, 0)
    assert [r.pk for r in endorsements_activate_due(today=T + days(5))] == [employee.pk, spouse.pk]
    assert covers("E1001") == [
        ("SELF", "GOLD", 500000, T + days(5), book.policy.end_date, "ACTIVE", ""),
        ("SPOUSE", "GOLD", 500000, T, book.policy.end_date, "ACTIVE", ""),
    ]


def test_a_sweep_while_another_runs_does_nothing(book, submit):
    add = confirmed(submit(employee_row(book)))
    other = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(%s, %s)", list(locks.ACTIVATION_LOCK_KEY))
        assert endorsements_activate_due() == []
        assert (EndorsementRequest.objects.get(pk=add.pk).state, Coverage.objects.count()) == (S.CONFIRMED, 0)
    finally:
        other.execute("SELECT pg_advisory_unlock(%s, %s)", list(locks.ACTIVATION_LOCK_KEY))
        other.close()
    assert [r.pk for r in endorsements_activate_due()] == [add.pk]


def test_a_sweep_costs_the_same_statements_for_three_requests_as_for_twelve(book, submit):
    def statements(count: int, start: int) -> int:
        for number in range(start, start + count):
            confirmed(submit(employee_row(book, employee_code=f"N{number}")), insurer_member_id=f"M{number}")
        with CaptureQueriesContext(connection) as queries:
            assert len(endorsements_activate_due()) == count
        return len(queries)

    assert statements(3, 0) == statements(12, 100)
    assert Coverage.objects.filter(status="ACTIVE").count() == 15


def test_the_sweep_is_a_pipeline_task_on_a_beat_schedule_of_30_seconds_or_less():
    entry = settings.CELERY_BEAT_SCHEDULE["endorsements-pipeline-activate-due"]
    assert entry["task"] == activate_due_task.name == "endorsements.pipeline.activate_due"
    assert entry["schedule"] == settings.ACTIVATION_SWEEP_SECONDS <= 30
    assert current_app.amqp.router.route({}, activate_due_task.name)["queue"].name == "pipeline"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:task_always_eager has no effect on send_task")  # it goes to the broker
def test_a_worker_on_the_pipeline_queue_runs_the_sweep(employer, tmp_path):
    book = book_create(employer, timezone.localdate())
    add = confirmed(submitted(book, employee_row(book)), insurer_member_id="W-1")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ems.settings.test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_TASK_ALWAYS_EAGER": "false",
    }
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "ems", "worker", "-Q", "pipeline"]
            + ["--pool", "solo", "--without-heartbeat", "--without-gossip", "--without-mingle"],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            current_app.send_task(activate_due_task.name)  # through the broker, as beat sends it
            deadline = time.monotonic() + 60
            while EndorsementRequest.objects.get(pk=add.pk).state != S.ACTIVE:
                assert worker.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "worker.log"
                ).read_text()
                time.sleep(0.2)
        finally:
            stop(worker)
    wait_for_other_sessions_to_end()
    assert covers("E1001") == [("SELF", "GOLD", 500000, book.today, book.policy.end_date, "ACTIVE", "W-1")]
