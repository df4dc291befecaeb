"""No admin accepts a lookup through a secret field, for any role (`ems.admin_mixins`).

Walks every registered model admin and every secret field it can reach (its model's own,
and each related model's one relation away), as each ops role and as a superuser, and
asks the change list to filter by `<path>__startswith=`, `__icontains=` and `__exact=`:
an admin the role may open answers 400 (Django's answer to a refused lookup), one it may
not answers 403. Never 200, so a secret cannot be guessed a character at a time.
"""

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse

from ems.admin_mixins import lookup_touches_secret, model_secret_fields, secret_lookup_check
from ems.models import ApiClient
from ems.roles import ROLE_NAMES
from insurers.models import Insurer
from tests.factories import EmployerFactory, InsurerFactory, UserFactory, api_client_create

pytestmark = pytest.mark.django_db

SUFFIXES = ("__startswith", "__icontains", "__exact")


def registered_admins() -> list:
    site = admin.site
    return [site.get_model_admin(model) for model in apps.get_models() if site.is_registered(model)]


def own_secrets(model_admin) -> list[str]:
    return [*model_secret_fields(model_admin.model), *getattr(model_admin, "secret_field_names", ())]


def secret_paths(model_admin) -> list[str]:
    """Every secret field reachable from the admin's model: its own, and one relation away."""
    paths = own_secrets(model_admin)
    for field in model_admin.model._meta.get_fields():
        if not field.is_relation or field.related_model is None:
            continue
        related = field.related_model
        names = model_secret_fields(related)
        if admin.site.is_registered(related):
            names += list(getattr(admin.site.get_model_admin(related), "secret_field_names", ()))
        paths += [f"{field.name}__{name}" for name in names]  # a reverse relation's query name too
    return paths


def changelist(model_admin) -> str:
    meta = model_admin.model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")


def callers() -> dict[str, object]:
    people = {"superuser": UserFactory(username="walk-superuser", is_staff=True, is_superuser=True)}
    for role in ROLE_NAMES:
        user = UserFactory(username=f"walk-{role}", is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        people[role] = user
    return people


def test_every_admin_refuses_every_lookup_through_a_secret_for_every_role(client):
    # given: rows behind the secrets, so an allowed lookup would have something to answer
    InsurerFactory(webhook_secret_primary="whsec_walk_0123456789abcdef", credentials={"password": "walk-pw"})
    api_client_create(employer=EmployerFactory(), name="walk")
    refused: set[tuple[str, str]] = set()
    forbidden: set[tuple[str, str]] = set()
    walked = 0
    for caller, user in callers().items():
        client.force_login(user)
        for model_admin in registered_admins():
            paths = secret_paths(model_admin)
            if not paths:
                continue
            url = changelist(model_admin)
            opens = client.get(url).status_code
            assert opens in (200, 403), (caller, url, opens)
            for path in paths:
                for suffix in SUFFIXES:
                    # when
                    response = client.get(url, {f"{path}{suffix}": "w"})
                    walked += 1
                    # then
                    expected = 400 if opens == 200 else 403
                    assert response.status_code == expected, (caller, url, path, suffix, response.status_code)
                    (refused if expected == 400 else forbidden).add((caller, f"{url}?{path}"))
    # the walk reached the secrets the issue names, for the read-only role too
    for caller in ("ops_viewer", "ops_operator", "finance_approver", "superuser"):
        for path in ("webhook_secret_primary", "webhook_secret_secondary", "credentials"):
            assert (caller, f"{changelist(admin.site.get_model_admin(Insurer))}?{path}") in refused
        assert (caller, f"{changelist(admin.site.get_model_admin(ApiClient))}?secret_hash") in refused
    assert ("superuser", "/admin/auth/user/?password") in refused
    assert ("ops_viewer", "/admin/auth/user/?password") in forbidden
    assert walked > 100


def test_a_lookup_on_a_field_that_is_not_secret_still_filters(client):
    InsurerFactory(code="visible")
    viewer = UserFactory(is_staff=True)
    viewer.groups.add(Group.objects.get(name="ops_viewer"))
    client.force_login(viewer)
    response = client.get(changelist(admin.site.get_model_admin(Insurer)), {"code__startswith": "vis"})
    assert response.status_code == 200
    assert [insurer.code for insurer in response.context["cl"].result_list] == ["visible"]


def test_the_walk_of_a_path_stops_at_the_secret_whatever_follows():
    assert lookup_touches_secret(Insurer, "credentials__password__icontains")
    assert lookup_touches_secret(Insurer, "policies__insurer__webhook_secret_primary")
    assert lookup_touches_secret(ApiClient, "employer__api_clients__secret_hash__startswith")
    assert not lookup_touches_secret(Insurer, "code__startswith")
    assert not lookup_touches_secret(Insurer, "no_such_field")


def test_the_system_check_finds_no_admin_without_the_refusal_and_names_one_that_has_none():
    assert secret_lookup_check() == []
    model_admin = admin.site.get_model_admin(Insurer)
    original = type(model_admin)
    bare = type("BareInsurerAdmin", (admin.ModelAdmin,), {})
    admin.site.unregister(Insurer)
    admin.site.register(Insurer, bare)
    try:
        problems = secret_lookup_check()
    finally:
        admin.site.unregister(Insurer)
        admin.site.register(Insurer, original)
    assert [problem.id for problem in problems] == ["ems.E001"]
    assert "credentials, webhook_secret_primary, webhook_secret_secondary" in problems[0].msg
