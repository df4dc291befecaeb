"""`bulk_writes`: COPY inserts, reserved ids and `= ANY(array)` filters, against PostgreSQL."""

import pytest

from endorsements import bulk_writes
from endorsements.models import Member
from tests.factories import EmployerFactory, MemberFactory

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
