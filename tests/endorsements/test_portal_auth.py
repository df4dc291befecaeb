"""The HR portal's doors: session login and logout, who may enter, CSRF."""

import pytest
from django.test import Client

from endorsements.models import EndorsementBatch
from tests.factories import EmployerFactory, UserFactory, hr_user_create

pytestmark = pytest.mark.django_db

PASSWORD = "pass-Word-123"


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    for path in (
        "/portal/",
        "/portal/template.csv",
        "/portal/endorsements/",
        "/portal/balance/",
        "/portal/batches/1/",
    ):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == f"/portal/login/?next={path}"


def test_the_login_page_has_labelled_fields(client):
    response = client.get("/portal/login/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert "<h1>Sign in to the HR portal</h1>" in html


def test_an_hr_user_logs_in_and_sees_their_employer():
    # given an HR user of an employer
    employer = EmployerFactory(name="Acme Textiles")
    user = hr_user_create(employer=employer, username="asha")
    browser = Client(enforce_csrf_checks=True)
    page = browser.get("/portal/login/")
    token = page.cookies["csrftoken"].value
    # when they sign in with their password
    response = browser.post(
        "/portal/login/",
        {
            "username": "asha",
            "password": PASSWORD,
            "next": "/portal/endorsements/",
            "csrfmiddlewaretoken": token,
        },
    )
    # then they land where they were going, logged in, with their employer in the header
    assert response.status_code == 302
    assert response["Location"] == "/portal/endorsements/"
    assert int(browser.session["_auth_user_id"]) == user.pk
    home = browser.get("/portal/")
    assert home.status_code == 200
    assert "Acme Textiles" in home.content.decode()


def test_a_wrong_password_is_refused_without_a_session(client):
    hr_user_create(employer=EmployerFactory(), username="asha")
    response = client.post("/portal/login/", {"username": "asha", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password." in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("is_staff", [True, False])
def test_staff_and_users_without_an_employer_cannot_log_in_to_the_portal(client, is_staff):
    UserFactory(username="ops", is_staff=is_staff)
    response = client.post("/portal/login/", {"username": "ops", "password": PASSWORD})
    assert response.status_code == 200
    assert "This account is not linked to an employer" in response.content.decode()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("is_staff", [True, False])
def test_a_session_without_an_employer_gets_the_forbidden_page(client, is_staff):
    client.force_login(UserFactory(is_staff=is_staff))
    response = client.get("/portal/")
    assert response.status_code == 403
    assert "The HR portal is not available to this account" in response.content.decode()


def test_logout_is_a_post_and_ends_the_session(client):
    client.force_login(hr_user_create(employer=EmployerFactory()))
    assert client.get("/portal/logout/").status_code == 405
    assert "_auth_user_id" in client.session
    response = client.post("/portal/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/portal/logged-out/"
    assert "_auth_user_id" not in client.session
    assert client.get("/portal/").status_code == 302


def test_posts_without_a_csrf_token_are_refused_and_change_nothing():
    # given a logged-in HR user whose browser does not send the CSRF token
    employer = EmployerFactory()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(hr_user_create(employer=employer))
    # when they post an upload, a logout and a login without it
    upload = browser.post("/portal/", {"file": _csv_file()})
    logout = browser.post("/portal/logout/")
    # then each is refused with 403 and nothing changed
    assert upload.status_code == 403
    assert logout.status_code == 403
    assert EndorsementBatch.objects.count() == 0
    assert "_auth_user_id" in browser.session
    assert (
        Client(enforce_csrf_checks=True)
        .post("/portal/login/", {"username": "x", "password": "y"})
        .status_code
        == 403
    )


def _csv_file():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("people.csv", b"action,employee_code\r\n", content_type="text/csv")
