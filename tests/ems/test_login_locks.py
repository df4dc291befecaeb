"""Login lockouts on the portal and the admin (`ems.login_locks`, django-axes), through their pages.

A few failures for a username, or from an address, lock it for the cool-down: the right
password then waits too (429, Retry-After, a page that says so). The lock's start and an
operator's unlock are audited.
"""

import datetime
import logging
import time

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import Group
from django.urls import reverse

from ems.models import OutboxEvent
from tests.factories import EmployerFactory, UserFactory, hr_user_create

pytestmark = pytest.mark.django_db

PASSWORD = "pass-Word-123"  # tests.factories.UserFactory's
PORTAL_LOGIN = "/portal/login/"
ADMIN_LOGIN = "/admin/login/"


@pytest.fixture(autouse=True)
def small_limits(settings):
    settings.AXES_FAILURE_LIMIT = 3
    settings.AXES_COOLOFF_TIME = datetime.timedelta(minutes=15)


def sign_in(http, url: str, username: str, password: str, *, address: str = "127.0.0.1"):
    return http.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def signed_in(http) -> bool:
    return "_auth_user_id" in http.session


def login_audits() -> list[tuple[str, str, str]]:
    rows = OutboxEvent.objects.filter(sink=OutboxEvent.Sink.MONGO, destination="audit_logs").order_by("id")
    return [
        (row.payload["actor"], row.payload["action"], row.payload["object_id"])
        for row in rows
        if row.payload["action"].startswith("login.")
    ]


def assert_locked(response, *, page_says: str) -> None:
    assert response.status_code == 429
    assert 14 * 60 < int(response["Retry-After"]) <= 15 * 60
    page = response.content.decode()
    assert "Too many failed sign-ins for this username or from this address (3 in a row)" in page
    assert "even with the right password" in page
    assert page_says in page


@pytest.mark.parametrize(
    "url, page_says",
    [(PORTAL_LOGIN, "ask your EMS operations contact"), (ADMIN_LOGIN, "ask an administrator to unlock it")],
)
def test_after_the_limit_the_right_password_waits_for_the_cool_down(client, caplog, url, page_says):
    caplog.set_level(logging.DEBUG)
    # given
    user = hr_user_create(employer=EmployerFactory(), username="hr-alice")
    if url == ADMIN_LOGIN:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    caplog.clear()  # (the factory's own debug lines name the user)
    # when: three wrong passwords
    wrong = [sign_in(client, url, "hr-alice", "not-it").status_code for _ in range(3)]
    # then: two refused on the login page, the third locks, and the right one is locked out too
    assert wrong == [200, 200, 429]
    assert_locked(sign_in(client, url, "hr-alice", PASSWORD), page_says=page_says)
    assert not signed_in(client)
    # the lock's start is audited once, without the password
    assert login_audits() == [("login:hr-alice", "login.locked_out", "hr-alice")]
    assert PASSWORD not in str(list(OutboxEvent.objects.values_list("payload", flat=True)))
    # the logs name the door, never the username, the address or a password
    assert f"login at {url}" in caplog.text
    for private in ("hr-alice", "127.0.0.1", PASSWORD, "not-it"):
        assert private not in caplog.text


def test_failures_from_one_address_lock_every_username_there(client):
    hr_user_create(employer=EmployerFactory(), username="hr-bob")
    for n in range(3):
        sign_in(client, PORTAL_LOGIN, f"guess-{n}", "not-it", address="192.0.2.10")
    assert_locked(
        sign_in(client, PORTAL_LOGIN, "hr-bob", PASSWORD, address="192.0.2.10"), page_says="Sign-in locked"
    )
    # from elsewhere, bob signs in
    response = sign_in(client, PORTAL_LOGIN, "hr-bob", PASSWORD, address="192.0.2.11")
    assert (response.status_code, signed_in(client)) == (302, True)


def test_failures_for_one_username_lock_it_from_every_address(client):
    hr_user_create(employer=EmployerFactory(), username="hr-carol")
    for n in range(3):
        sign_in(client, PORTAL_LOGIN, "hr-carol", "not-it", address=f"192.0.2.{20 + n}")
    assert_locked(
        sign_in(client, PORTAL_LOGIN, "hr-carol", PASSWORD, address="192.0.2.30"), page_says="Sign-in"
    )
    assert not signed_in(client)


def test_a_success_before_the_limit_forgets_the_earlier_failures(client):
    hr_user_create(employer=EmployerFactory(), username="hr-dan")
    sign_in(client, PORTAL_LOGIN, "hr-dan", "not-it")
    sign_in(client, PORTAL_LOGIN, "hr-dan", "not-it")
    assert sign_in(client, PORTAL_LOGIN, "hr-dan", PASSWORD).status_code == 302
    client.logout()
    assert [sign_in(client, PORTAL_LOGIN, "hr-dan", "not-it").status_code for _ in range(2)] == [200, 200]
    assert sign_in(client, PORTAL_LOGIN, "hr-dan", PASSWORD).status_code == 302


def test_the_lock_ends_with_the_cool_down(client, settings):
    settings.AXES_COOLOFF_TIME = datetime.timedelta(seconds=1)
    hr_user_create(employer=EmployerFactory(), username="hr-erin")
    for _ in range(3):
        sign_in(client, PORTAL_LOGIN, "hr-erin", "not-it")
    assert sign_in(client, PORTAL_LOGIN, "hr-erin", PASSWORD).status_code == 429
    time.sleep(1.1)
    assert sign_in(client, PORTAL_LOGIN, "hr-erin", PASSWORD).status_code == 302


def test_an_operator_unlocks_in_the_admin_and_the_unlock_is_audited(client):
    # given: a locked HR user
    hr_user_create(employer=EmployerFactory(), username="hr-fay")
    for _ in range(3):
        sign_in(client, PORTAL_LOGIN, "hr-fay", "not-it")
    assert sign_in(client, PORTAL_LOGIN, "hr-fay", PASSWORD).status_code == 429
    changelist = reverse("admin:axes_accessattempt_changelist")
    selected = {
        "action": "unlock",
        "_selected_action": list(AccessAttempt.objects.values_list("pk", flat=True)),
    }
    # a viewer cannot see the lockouts, let alone unlock
    viewer = UserFactory(is_staff=True)
    viewer.groups.add(Group.objects.get(name="ops_viewer"))
    client.force_login(viewer)
    assert client.get(changelist).status_code == 403
    assert client.post(changelist, selected).status_code == 403
    assert AccessAttempt.objects.count() == 1
    # when: an operator unlocks
    operator = UserFactory(is_staff=True)
    operator.groups.add(Group.objects.get(name="ops_operator"))
    client.force_login(operator)
    listing = client.get(changelist)
    assert listing.status_code == 200 and "hr-fay" in listing.content.decode()
    response = client.post(changelist, selected, follow=True)
    # then
    assert "Unlocked 1 sign-in record(s)." in response.content.decode()
    assert AccessAttempt.objects.count() == 0
    assert login_audits()[-1] == (f"user:{operator.pk}", "login.unlocked", "hr-fay")
    client.logout()
    assert sign_in(client, PORTAL_LOGIN, "hr-fay", PASSWORD).status_code == 302
