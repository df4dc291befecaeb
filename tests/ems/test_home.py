"""The home page at `/`, the page the README's URL and the admin's "View site" open."""

import pytest

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_the_home_page_names_every_door_with_its_link(client):
    response = client.get("/")

    assert response.status_code == 200
    body = response.content.decode()
    for name, url in (
        ("HR portal", "/portal/"),
        ("Operations admin", "/admin/"),
        ("API documentation", "/api/docs/"),
        ("Health", "/healthz"),
    ):
        assert f'<a href="{url}">{name}</a>' in body


def test_the_admins_view_site_link_leads_to_the_home_page(client):
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))

    body = client.get("/admin/").content.decode()

    assert '<a href="/">View site</a>' in body
