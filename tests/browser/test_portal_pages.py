"""The portal in a real browser: login, the template download, keyboard use."""

import pytest

from tests.factories import EmployerFactory, hr_user_create

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "pass-Word-123"
ACTIVE_ELEMENT = "document.activeElement.id || document.activeElement.textContent.trim()"


def log_in(page, username: str) -> None:
    page.goto("/portal/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/portal/")


def test_an_hr_user_logs_in_downloads_the_template_and_logs_out(page):
    # given an HR user
    employer = EmployerFactory(name="Acme Textiles")
    hr_user_create(employer=employer, username="asha")
    # when they sign in
    log_in(page, "asha")
    # then the upload page greets them with their employer and the guide
    assert page.get_by_role("heading", level=1).inner_text() == "Upload endorsements"
    assert page.locator(".employer").text_content() == "Employer: Acme Textiles"
    assert page.get_by_role("table", name="What each column needs, by action").is_visible()
    page.screenshot(path="/tmp/portal-upload.png", full_page=True)
    # and the template downloads as the header row
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download the CSV template").click()
    download = download_info.value
    assert download.suggested_filename == "endorsements-template.csv"
    with open(download.path(), encoding="utf-8") as template:
        assert template.read().startswith("action,employee_code,relation,")
    # and logging out ends the session
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/portal/logged-out/")
    page.goto("/portal/endorsements/")
    assert page.url.endswith("/portal/login/?next=/portal/endorsements/")


def test_the_upload_form_is_reachable_by_keyboard(page):
    hr_user_create(employer=EmployerFactory(), username="kiran")
    log_in(page, "kiran")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    page.keyboard.press("Enter")
    focused = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
        )
        if focused[-1] == "Upload and process":
            break
    assert "id_file" in focused
    assert focused[-1] == "Upload and process"
