"""The operations admin's busiest lists on a laptop screen (1366×768), in Chromium.

Each list is opened at that size with realistic rows (long employer and insurer names,
full tracking ids) and must show the columns an operator reads, the money ones included,
inside the viewport with no sideways scrolling. A screenshot of each is kept for review.
"""

import pytest
from django.utils import timezone

from endorsements.models import EndorsementRequest
from ledger import services
from ledger.models import Account
from tests.factories import (
    CoverageFactory,
    EmployerFactory,
    InsurerFactory,
    MemberFactory,
    PlanFactory,
    UserFactory,
)
from tests.ledger.conftest import APPROVER_CODENAMES, fund, user_with_ledger_permissions

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LAPTOP = {"width": 1366, "height": 768}
PASSWORD = "pass-Word-123"


@pytest.fixture
def laptop_page(browser, asgi_server):
    context = browser.new_context(base_url=asgi_server, viewport=LAPTOP)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def admin_log_in(page) -> None:
    UserFactory(username="ops.lead", is_staff=True, is_superuser=True)
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("ops.lead")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")


def rows_with_long_names(count: int) -> None:
    insurer = InsurerFactory(name="Northern Star General Insurance Company Limited")
    approver = user_with_ledger_permissions(*APPROVER_CODENAMES, is_staff=True)
    for number in range(count):
        employer = EmployerFactory(name=f"Bluepeak Consolidated Textiles and Garments {number} Pvt Ltd")
        coverage = CoverageFactory(member=MemberFactory(employer=employer), plan=PlanFactory())
        policy = coverage.plan.policy
        policy.employer = employer
        policy.save(update_fields=["employer"])
        EndorsementRequest.objects.create(
            employer=employer,
            policy=policy,
            type="ADD",
            member_data={"employee_code": f"BLUEPEAK-EMP-{number:06d}", "relation": "SELF"},
            premium_amount=12_345_678_90 + number,
            tax_amount=1_883_239_17,
            content_hash=f"{number:064d}",
            source="CSV",
            received_at=timezone.now(),
        )
        account = Account.objects.create(employer=employer, insurer=insurer, currency="INR")
        fund(account, 987_654_321_00, approver, key=f"big-{number}")
        services.hold_place(
            account_id=account.pk, amount=12_345_678_00, reference=f"R{number}", idempotency_key=f"h{number}"
        )


def columns_outside_the_viewport(page, wanted: list[str]) -> list[str]:
    """The wanted column headings whose right edge is past the viewport's (or missing)."""
    outside = []
    for column in wanted:
        header = page.locator(f"#result_list thead th.column-{column}")
        box = header.bounding_box() if header.count() == 1 else None
        if box is None or box["x"] + box["width"] > LAPTOP["width"]:
            outside.append(column)
    return outside


@pytest.mark.parametrize(
    ("url", "wanted"),
    [
        (
            "/admin/endorsements/endorsementrequest/",
            [
                "tracking",
                "employer_name",
                "type",
                "state",
                "employee_code",
                "premium_display",
                "sla_status",
                "source",
                "received",
            ],
        ),
        (
            "/admin/ledger/account/",
            [
                "employer_name",
                "insurer_name",
                "posted_display",
                "held_display",
                "available_display",
                "parked_display",
            ],
        ),
    ],
)
def test_an_admin_list_shows_its_columns_on_a_laptop_screen(laptop_page, url, wanted):
    # given rows with long names
    rows_with_long_names(5)
    admin_log_in(laptop_page)
    # when an operator opens the list at 1366×768
    laptop_page.goto(url)
    laptop_page.locator("#result_list").wait_for()
    laptop_page.screenshot(path=f"/tmp/admin-{url.strip('/').replace('/', '-')}-1366.png")
    # then every column it needs, the balances and money included, is inside the viewport
    assert columns_outside_the_viewport(laptop_page, wanted) == []
    assert laptop_page.evaluate("document.documentElement.scrollWidth") <= LAPTOP["width"]
