"""API clients in the admin: the secret shown once on add, never its hash; revoke cuts tokens off."""

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from ems.auth import hash_secret
from ems.models import ApiClient, OutboxEvent
from tests.factories import EmployerFactory, UserFactory, api_client_create

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:ems_apiclient_changelist")
ADD = reverse("admin:ems_apiclient_add")


class WhoAmI(APIView):
    """A view with the project's default authentication and permission classes."""

    def get(self, request):
        return Response({"employer_id": request.caller.employer_id})


def whoami(token: str):
    request = APIRequestFactory().get("/whoami", HTTP_AUTHORIZATION=f"Bearer {token}")
    return WhoAmI.as_view()(request)


def token_for(http, client_id: str, secret: str):
    return http.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        content_type="application/json",
    )


def ops_user(role: str):
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def change_url(api_client: ApiClient) -> str:
    return reverse("admin:ems_apiclient_change", args=[api_client.pk])


def test_adding_a_client_shows_its_secret_once_and_stores_only_the_hash(client):
    # given
    employer = EmployerFactory()
    admin_user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    # when
    response = client.post(ADD, {"employer": employer.pk, "name": "Workday"}, follow=True)
    # then: one client, its secret in the one message that follows the add
    assert response.status_code == 200
    created = ApiClient.objects.get()
    assert (created.employer, created.name, created.is_active) == (employer, "Workday", True)
    shown = [str(message) for message in response.context["messages"]]
    assert len(shown) == 2  # the secret, and the admin's "added successfully"
    secret = re.search(
        r"<code>" + re.escape(created.client_id) + r"</code>: <code>([^<]+)</code>", shown[0]
    ).group(1)
    assert created.secret_hash == hash_secret(secret)
    assert token_for(client, created.client_id, secret).status_code == 200
    # and never again, nor its hash
    client.force_login(admin_user)
    for url in (CHANGELIST, change_url(created)):
        html = client.get(url).content.decode()
        assert secret not in html
        assert created.secret_hash not in html
    audit = OutboxEvent.objects.get(payload__action="api_client.created")
    assert audit.payload["actor"] == f"user:{admin_user.pk}"
    assert secret not in str(audit.payload)


def test_the_change_form_edits_only_the_name(client):
    # given
    api_client, secret = api_client_create(employer=EmployerFactory(), name="Old name")
    other_employer = EmployerFactory()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    # when: a post that also tries to move, deactivate and re-key the client
    response = client.post(
        change_url(api_client),
        {
            "name": "New name",
            "employer": other_employer.pk,
            "is_active": "",
            "client_id": "cli_hijacked",
            "secret_hash": "0" * 64,
        },
    )
    # then
    assert response.status_code == 302
    stored = ApiClient.objects.get(pk=api_client.pk)
    assert (stored.name, stored.employer_id, stored.is_active, stored.client_id, stored.secret_hash) == (
        "New name",
        api_client.employer_id,
        True,
        api_client.client_id,
        hash_secret(secret),
    )


def test_revoking_in_the_admin_makes_the_token_fail_at_once(client):
    # given: a client with a working token
    api_client, secret = api_client_create(employer=EmployerFactory())
    token = token_for(client, api_client.client_id, secret).json()["access_token"]
    assert whoami(token).status_code == 200
    operator = ops_user("ops_operator")
    client.force_login(operator)
    # when: the operator revokes it from the change list
    response = client.post(CHANGELIST, {"action": "revoke", "_selected_action": [api_client.pk]}, follow=True)
    # then
    assert response.status_code == 200
    assert [str(message) for message in response.context["messages"]] == ["Revoked 1 API client(s)."]
    api_client.refresh_from_db()
    assert api_client.is_active is False
    assert api_client.revoked_at is not None
    refused = whoami(token)
    assert refused.status_code == 401
    assert (refused.data["error"]["code"], refused.data["error"]["message"]) == (
        "authentication_failed",
        "The API client has been revoked.",
    )
    assert token_for(client, api_client.client_id, secret).status_code == 401
    audit = OutboxEvent.objects.get(payload__action="api_client.revoked")
    assert audit.payload["actor"] == f"user:{operator.pk}"
    assert (audit.payload["before"]["is_active"], audit.payload["after"]["is_active"]) == (True, False)


def test_revoking_twice_changes_nothing_the_second_time(client):
    api_client, _ = api_client_create(employer=EmployerFactory())
    client.force_login(ops_user("ops_operator"))
    client.post(CHANGELIST, {"action": "revoke", "_selected_action": [api_client.pk]}, follow=True)
    api_client.refresh_from_db()
    first_revoked_at = api_client.revoked_at

    response = client.post(CHANGELIST, {"action": "revoke", "_selected_action": [api_client.pk]}, follow=True)

    assert [str(message) for message in response.context["messages"]] == ["Revoked 0 API client(s)."]
    api_client.refresh_from_db()
    assert api_client.revoked_at == first_revoked_at
    assert OutboxEvent.objects.filter(payload__action="api_client.revoked").count() == 1


@pytest.mark.parametrize("role", ["ops_viewer", "finance_approver"])
def test_roles_without_change_permission_cannot_revoke(client, role):
    # given
    api_client, secret = api_client_create(employer=EmployerFactory())
    client.force_login(ops_user(role))
    # when
    listing = client.get(CHANGELIST)
    response = client.post(CHANGELIST, {"action": "revoke", "_selected_action": [api_client.pk]})
    # then: the action is not offered, and posting it anyway does nothing
    assert listing.status_code == 200
    assert b'value="revoke"' not in listing.content
    assert response.status_code == 200
    api_client.refresh_from_db()
    assert api_client.is_active is True
    assert api_client.revoked_at is None
    assert not OutboxEvent.objects.filter(payload__action="api_client.revoked").exists()
    assert token_for(client, api_client.client_id, secret).status_code == 200


def test_clients_are_never_deleted_not_even_by_a_superuser(client):
    api_client, _ = api_client_create(employer=EmployerFactory())
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    assert client.get(reverse("admin:ems_apiclient_delete", args=[api_client.pk])).status_code == 403
    assert b'value="delete_selected"' not in client.get(CHANGELIST).content
    assert ApiClient.objects.filter(pk=api_client.pk).exists()
