"""The admin's audit trail page (ems/admin.py): filters, permission, MongoDB down."""

import datetime
import socket

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from ems import clients
from ems.admin import audit_trail_url
from ems.audit import AUDIT_COLLECTION
from ems.models import OutboxEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

URL = "admin:ems_audit_trail"
UTC = datetime.UTC


def permission(codename: str) -> Permission:
    # declared on OutboxEvent.Meta.permissions by the platform; created here if not yet migrated
    permission, _ = Permission.objects.get_or_create(
        codename=codename,
        content_type=ContentType.objects.get_for_model(OutboxEvent),
        defaults={"name": codename.replace("_", " ")},
    )
    return permission


@pytest.fixture
def auditor(client):
    user = UserFactory(is_staff=True)
    user.user_permissions.add(permission("view_audit_trail"), permission("view_outboxevent"))
    client.force_login(user)
    return client


@pytest.fixture
def records(mongo_db):
    def record(event_id, day, **fields):
        return {
            "_id": event_id,
            "event_id": event_id,
            "at": datetime.datetime(2026, 5, day, 10, tzinfo=UTC),
            "actor": "ops1",
            "action": "member.corrected",
            "object_type": "member",
            "object_id": "1",
            "employer_id": 7,
            "before": {},
            "after": {},
            "note": "",
            "request_id": "",
            **fields,
        }

    mongo_db[AUDIT_COLLECTION].insert_many(
        [
            record("e1", 1),
            record("e2", 2, actor="ops2"),
            record("e3", 3, object_id="2", employer_id=8),
            record("e4", 4, object_type="endorsement", object_id="TRK-9"),
        ]
    )


def listed(response) -> list[str]:
    return [record["event_id"] for record in response.context["records"]]


def test_an_auditor_sees_every_record_newest_first(auditor, records):
    response = auditor.get(reverse(URL))
    assert response.status_code == 200
    assert listed(response) == ["e4", "e3", "e2", "e1"]
    assert b'data-event-id="e4"' in response.content


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"actor": "ops2"}, ["e2"]),
        ({"employer_id": "8"}, ["e3"]),
        ({"object_type": "member", "object_id": "1"}, ["e2", "e1"]),
        ({"since": "2026-05-02", "until": "2026-05-03"}, ["e3", "e2"]),  # until is an inclusive date
        ({"until": "2026-05-01"}, ["e1"]),
        ({"actor": "nobody"}, []),
    ],
)
def test_filters(auditor, records, query, expected):
    response = auditor.get(reverse(URL), query)
    assert response.status_code == 200
    assert listed(response) == expected


def test_invalid_filters_show_the_form_errors_and_no_records(auditor, records):
    response = auditor.get(reverse(URL), {"employer_id": "abc", "since": "yesterday"})
    assert response.status_code == 200
    assert listed(response) == []
    assert set(response.context["form"].errors) == {"employer_id", "since"}


def test_pages_of_fifty(auditor, mongo_db):
    mongo_db[AUDIT_COLLECTION].insert_many(
        [
            {
                "_id": f"p{n:03d}",
                "event_id": f"p{n:03d}",
                "at": datetime.datetime(2026, 5, 1, tzinfo=UTC) + datetime.timedelta(minutes=n),
                "actor": "ops1",
            }
            for n in range(55)
        ]  # fmt: skip
    )
    first = auditor.get(reverse(URL))
    assert listed(first) == [f"p{n:03d}" for n in range(54, 4, -1)]
    assert first.context["next_query"] == "page=2"
    second = auditor.get(reverse(URL), {"page": "2"})
    assert listed(second) == [f"p{n:03d}" for n in range(4, -1, -1)]
    assert second.context["next_query"] == ""
    assert second.context["previous_query"] == "page=1"


def test_the_object_link_other_admins_use(auditor, records):
    url = audit_trail_url(object_type="endorsement", object_id="TRK-9")
    assert url == "/admin/ems/audit-trail/?object_type=endorsement&object_id=TRK-9"
    assert listed(auditor.get(url)) == ["e4"]


def test_the_admin_index_links_to_the_audit_trail_for_auditors_only(auditor, client):
    assert reverse(URL).encode() in auditor.get(reverse("admin:index")).content
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(permission("view_outboxevent"))
    client.force_login(viewer)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert reverse(URL).encode() not in response.content


def test_staff_without_the_permission_are_refused(client, records):
    client.force_login(UserFactory(is_staff=True))
    assert client.get(reverse(URL)).status_code == 403


def test_non_staff_are_sent_to_the_login_page(client, records):
    client.force_login(UserFactory(is_staff=False))
    response = client.get(reverse(URL))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_mongo_unreachable_says_so_clearly(auditor, settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.MONGO_URL = f"mongodb://127.0.0.1:{port}/"
    clients.reset()
    try:
        response = auditor.get(reverse(URL))
    finally:
        clients.reset()
    assert response.status_code == 503
    assert response.context["records"] == []
    assert response.context["error"].startswith(
        "The audit store (MongoDB) is unreachable, so the audit trail cannot be shown right now."
    )
    assert b'id="audit-trail-error"' in response.content


def test_records_name_the_people_clients_and_employers_behind_the_ids(auditor, mongo_db):
    # given records by a staff user, an API client and the system, about two employers
    from tests.factories import EmployerFactory, api_client_create

    acme = EmployerFactory(name="Acme Textiles")
    bluepeak = EmployerFactory(name="Bluepeak Foods")
    asha = UserFactory(username="asha.ops")
    hris, _ = api_client_create(employer=acme, name="Workday sync")
    base = {"action": "x", "object_type": "member", "object_id": "1", "before": {}, "after": {}}
    at = datetime.datetime(2026, 5, 1, 10, tzinfo=UTC)
    mongo_db[AUDIT_COLLECTION].insert_many(
        [
            {
                **base,
                "_id": "a",
                "event_id": "a",
                "at": at,
                "actor": f"user:{asha.pk}",
                "employer_id": acme.pk,
            },
            {
                **base,
                "_id": "b",
                "event_id": "b",
                "at": at,
                "actor": f"client:{hris.client_id}",
                "employer_id": acme.pk,
            },
            {
                **base,
                "_id": "c",
                "event_id": "c",
                "at": at,
                "actor": "system:ledger",
                "employer_id": bluepeak.pk,
            },
            {**base, "_id": "d", "event_id": "d", "at": at, "actor": "user:999999", "employer_id": 999999},
        ]
    )
    # when the auditor opens the trail
    response = auditor.get(reverse(URL))
    # then each id is shown by its name (the recorded id beside it, for the filters)
    shown = {r["event_id"]: (r["actor_name"], r["employer_name"]) for r in response.context["records"]}
    assert shown == {
        "a": ("asha.ops", "Acme Textiles"),
        "b": ("Workday sync (API client, Acme Textiles)", "Acme Textiles"),
        "c": ("system:ledger", "Bluepeak Foods"),
        "d": ("user:999999", "#999999"),
    }
    assert "<td>asha.ops<br>" in response.content.decode()


def test_the_actor_filter_takes_a_username(auditor, mongo_db):
    asha = UserFactory(username="asha.ops")
    base = {"action": "x", "object_type": "member", "object_id": "1", "employer_id": None}
    at = datetime.datetime(2026, 5, 1, 10, tzinfo=UTC)
    mongo_db[AUDIT_COLLECTION].insert_many(
        [
            {**base, "_id": "a", "event_id": "a", "at": at, "actor": f"user:{asha.pk}"},
            {**base, "_id": "b", "event_id": "b", "at": at, "actor": "system:ledger"},
        ]
    )

    assert listed(auditor.get(reverse(URL), {"actor": "asha.ops"})) == ["a"]
    assert listed(auditor.get(reverse(URL), {"actor": f"user:{asha.pk}"})) == ["a"]
    assert listed(auditor.get(reverse(URL), {"actor": "system:ledger"})) == ["b"]
