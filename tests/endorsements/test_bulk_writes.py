"""`bulk_writes`: COPY inserts, reserved ids, `= ANY(array)` filters and keyed probes, against PostgreSQL."""

import datetime

import pytest
from django.db import connection

from endorsements import bulk_writes
from endorsements.models import EndorsementRequest, Member
from tests.factories import EmployerFactory, MemberFactory, PolicyFactory

pytestmark = pytest.mark.django_db


def test_filter_any_matches_awkward_text_exactly_in_a_long_list():
    employer = EmployerFactory()
    awkward = ['A"1', "B\\2", "C,3", "D{4}", "E 5", "F'6"]
    for code in awkward:
        MemberFactory(employer=employer, employee_code=code)
    MemberFactory(employer=employer, employee_code="G7")
    wanted = awkward + [f"X{n}" for n in range(200)]  # long enough for the array path
    found = bulk_writes.filter_any(Member.objects.filter(employer=employer), "employee_code", wanted)
    assert sorted(found.values_list("employee_code", flat=True)) == sorted(awkward)


def test_filter_any_on_ids_in_a_long_list():
    members = [MemberFactory() for _ in range(3)]
    wanted = [m.pk for m in members[:2]] + list(range(10**9, 10**9 + 200))
    found = bulk_writes.filter_any(Member.objects.all(), "id", wanted)
    assert sorted(found.values_list("pk", flat=True)) == sorted(m.pk for m in members[:2])


def test_reserved_ids_are_fresh_and_distinct_and_rows_go_in_with_them():
    employer = EmployerFactory()
    ids = bulk_writes.ids_reserve(Member, 3)
    assert len(set(ids)) == 3
    assert not Member.objects.filter(pk__in=ids).exists()
    bulk_writes.rows_insert(
        Member,
        (
            "id",
            "employer_id",
            "employee_code",
            "relation",
            "first_name",
            "last_name",
            "date_of_birth",
            "gender",
            "email",
            "phone",
            "created_at",
            "updated_at",
        ),
        [
            (
                pk,
                employer.pk,
                f"R{pk}",
                "SELF",
                "Asha",
                "Rao",
                "1990-01-01",
                "F",
                "",
                "",
                "2026-01-01T00:00Z",
                "2026-01-01T00:00Z",
            )
            for pk in ids
        ],
    )
    assert sorted(Member.objects.filter(employer=employer).values_list("pk", flat=True)) == sorted(ids)
    assert bulk_writes.ids_reserve(Member, 1)[0] > max(ids)


def _request(employer, policy, key: str, state: str, content_hash: str = "") -> EndorsementRequest:
    return EndorsementRequest.objects.create(
        employer=employer,
        policy=policy,
        type="ADD",
        member_key=key,
        content_hash=content_hash or key,
        source="API",
        state=state,
    )


def test_rows_by_keys_finds_each_key_pair_once_and_applies_the_filters():
    policy = PolicyFactory()
    employer = policy.employer
    other_policy = PolicyFactory(employer=employer)
    wanted = _request(employer, policy, 'E"1|SELF', "VALIDATED")
    _request(employer, policy, 'E"1|SELF', "REJECTED")  # filtered out by state
    _request(employer, other_policy, 'E"1|SELF', "VALIDATED")  # another policy: not this key pair
    elsewhere = PolicyFactory()
    _request(elsewhere.employer, elsewhere, "E2|SELF", "VALIDATED")  # another employer
    second = _request(employer, other_policy, "E2|SELF", "FUND_LOCKED")
    keys = [
        (policy.pk, 'E"1|SELF'),
        (policy.pk, 'E"1|SELF'),
        (other_policy.pk, "E2|SELF"),
        (policy.pk, "none"),
    ]
    found = bulk_writes.rows_by_keys(
        EndorsementRequest,
        ("policy_id", "member_key"),
        keys,
        ("id", "member_key"),
        employer_id=employer.pk,
        state__in=["VALIDATED", "FUND_LOCKED"],
    )
    assert sorted(found) == sorted([(wanted.pk, 'E"1|SELF'), (second.pk, "E2|SELF")])


def test_rows_by_keys_probes_the_index_per_key_even_when_the_employer_has_many_rows():
    # given an employer with many requests, none of which the planner has statistics for
    policy = PolicyFactory()
    for n in range(300):
        _request(policy.employer, policy, f"E{n}|SELF", "VALIDATED")
    keys = [(policy.pk, f"E{n}|SELF") for n in range(0, 600, 2)]
    captured = []

    def explain(execute, sql, params, many, context):
        if sql.startswith("SELECT found."):
            with context["connection"].cursor() as cursor:
                cursor.execute("EXPLAIN " + sql, params)
                captured.extend(row[0] for row in cursor.fetchall())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        found = bulk_writes.rows_by_keys(
            EndorsementRequest,
            ("policy_id", "member_key"),
            keys,
            ("member_key",),
            employer_id=policy.employer_id,
        )
    # then every key that exists is found, each by its own probe of the (policy, member_key) index
    assert sorted(found) == sorted((f"E{n}|SELF",) for n in range(0, 300, 2))
    plan = "\n".join(captured)
    assert "endorsement_policy_member_idx" in plan
    assert "Nested Loop" in plan


@pytest.mark.parametrize("count", [3, bulk_writes.VALUES_UPDATE_MAX + 1])
def test_rows_update_sets_each_rows_own_values_and_touches_no_other_row(count):
    # given requests, and one more that is not updated
    policy = PolicyFactory()
    requests = [_request(policy.employer, policy, f"E{n}|SELF", "RECEIVED") for n in range(count)]
    bystander = _request(policy.employer, policy, "B|SELF", "RECEIVED")
    # when each gets its own premium, reasons and state
    bulk_writes.rows_update(
        EndorsementRequest,
        ["premium_amount", "rejection_reasons", "state"],
        [(r.pk, 1000 + n, f'[{{"code": "c{n}"}}]', "VALIDATED") for n, r in enumerate(requests)],
    )
    # then each row holds exactly its values
    stored = {
        pk: (premium, reasons, state)
        for pk, premium, reasons, state in EndorsementRequest.objects.values_list(
            "pk", "premium_amount", "rejection_reasons", "state"
        )
    }
    assert [stored[r.pk] for r in requests] == [
        (1000 + n, [{"code": f"c{n}"}], "VALIDATED") for n in range(count)
    ]
    assert stored[bystander.pk] == (None, [], "RECEIVED")


@pytest.mark.parametrize("database", ["postgresql", "other"])
def test_rows_go_in_with_the_times_given_auto_now_add_columns_included(monkeypatch, database):
    # given a decided row whose received, closed and updated times are one moment in the past
    # (the fallback for other databases is run here on PostgreSQL: the same field preparation)
    employer = EmployerFactory()
    [pk] = bulk_writes.ids_reserve(EndorsementRequest, 1)
    if database == "other":
        monkeypatch.setattr(bulk_writes, "is_postgresql", lambda: False)
    decided = "2026-12-02T10:00:00.123456+00:00"
    columns = (
        "id", "tracking_id", "employer_id", "type", "member_data", "content_hash", "member_key",
        "idempotency_key", "source", "state", "rejection_reasons", "attempts", "last_error",
        "insurer_reference", "received_at", "closed_at", "updated_at",
    )  # fmt: skip
    row = (
        pk, "END-B1", employer.pk, "ADD", '{"employee_code":"E1"}', "h", "E1|SELF",
        "", "CSV", "REJECTED", "[]", 0, "", "", decided, decided, decided,
    )  # fmt: skip
    # when it is inserted
    bulk_writes.rows_insert(EndorsementRequest, columns, [row])
    # then it holds exactly those times (auto_now_add did not restamp received_at) and its JSON
    stored = EndorsementRequest.objects.get(pk=pk)
    moment = datetime.datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=datetime.UTC)
    assert (stored.received_at, stored.closed_at, stored.updated_at) == (moment, moment, moment)
    assert stored.member_data == {"employee_code": "E1"}
