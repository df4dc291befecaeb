"""The API docs in a real browser on a closed network: every file they need comes from EMS.

Each request the page makes is recorded; any that would leave loopback is aborted (so a
CDN the page still named would show up here, not hang the test) and fails the test.
"""

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def record_requests(page) -> list[str]:
    """The URLs of every request the page makes; those off loopback are aborted."""
    requested: list[str] = []

    def route(route_, request) -> None:
        requested.append(request.url)
        if urlsplit(request.url).hostname in LOOPBACK:
            route_.continue_()
        else:
            route_.abort()

    page.route("**/*", route)
    return requested


def assert_all_loopback(requested: list[str]) -> None:
    outside = [url for url in requested if urlsplit(url).hostname not in LOOPBACK]
    assert outside == []


def test_swagger_ui_lists_the_endorsement_operations_with_no_request_off_loopback(page):
    requested = record_requests(page)

    page.goto("/api/docs/")

    page.locator(".opblock-summary-path", has_text="/api/v1/endorsements/").first.wait_for()
    operations = {
        (
            block.locator(".opblock-summary-method").inner_text(),
            block.locator(".opblock-summary-path").inner_text(),
        )
        for block in page.locator(".opblock").all()
    }
    assert {
        ("GET", "/api/v1/endorsements/"),
        ("POST", "/api/v1/endorsements/"),
        ("GET", "/api/v1/endorsements/{tracking_id}"),
        ("POST", "/api/v1/endorsements/batch"),
    } <= operations
    assert any("/static/drf_spectacular_sidecar/swagger-ui-dist/" in url for url in requested)
    assert_all_loopback(requested)


def test_redoc_renders_the_endorsement_operations_with_no_request_off_loopback(page):
    requested = record_requests(page)

    page.goto("/api/redoc/")

    page.locator("h2", has_text="endorsements_list").wait_for()
    assert page.locator("h2", has_text="endorsements_retrieve").count() == 1
    assert any("/static/drf_spectacular_sidecar/redoc/" in url for url in requested)
    assert_all_loopback(requested)
