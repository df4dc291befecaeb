"""`manage.py seed_demo`: idempotent demo data whose printed credentials work."""

import datetime
import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import F

from ems.identity import api_client_revoke
from ems.models import ApiClient, Employer, EmployerMembership
from endorsements.demo_data import (
    LOW_BALANCE_THRESHOLD,
    OPENING_BALANCE,
    annual_premium_minor,
    demo_seed,
    policy_year,
)
from endorsements.models import (
    Coverage,
    Member,
    Plan,
    PlanRate,
    Policy,
)
from insurers.models import Insurer
from ledger.models import Account, Entry, Hold, TopUp

pytestmark = pytest.mark.django_db

COUNTED = (Insurer, Employer, EmployerMembership, ApiClient, Policy, Plan, PlanRate, Member, Coverage)
LEDGER = (Account, Entry, Hold, TopUp)


def seed_json() -> dict:
    out = io.StringIO()
    call_command("seed_demo", "--json", stdout=out)
    return json.loads(out.getvalue())


def counts() -> dict[str, int]:
    User = get_user_model()
    return {model.__name__: model.objects.count() for model in (*COUNTED, *LEDGER, User)}


def money() -> list[tuple]:
    return list(Account.objects.order_by("pk").values_list("pk", "posted", "held"))


def token_response(http, client_id: str, client_secret: str):
    return http.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret},
        content_type="application/json",
    )


def test_the_json_has_exactly_the_design_shape():
    printed = seed_json()

    assert set(printed) == {"insurers", "employers", "ops_users"}
    assert len(printed["insurers"]) == 3
    for insurer in printed["insurers"]:
        assert set(insurer) == {"id", "code", "protocol", "webhook_secret"}
    assert sorted(insurer["protocol"] for insurer in printed["insurers"]) == ["REST", "SFTP", "SOAP"]
    assert len(printed["employers"]) == 4
    for employer in printed["employers"]:
        assert set(employer) == {"code", "hr_user", "api_client", "policies"}
        assert set(employer["hr_user"]) == {"username", "password"}
        assert set(employer["api_client"]) == {"client_id", "client_secret"}
        assert employer["policies"]
        for policy in employer["policies"]:
            assert set(policy) == {"number", "insurer_code", "plans"}
            for plan in policy["plans"]:
                assert set(plan) == {"code", "sum_insured_options"}
                assert all(isinstance(value, int) for value in plan["sum_insured_options"])
    assert [(user["username"], user["groups"]) for user in printed["ops_users"]] == [
        ("ops.viewer", ["ops_viewer"]),
        ("ops.operator", ["ops_operator"]),
        ("ops.finance", ["finance_approver"]),
    ]
    for user in printed["ops_users"]:
        assert set(user) == {"username", "password", "groups"}


def test_the_json_matches_the_database():
    printed = seed_json()
    for item in printed["insurers"]:
        insurer = Insurer.objects.get(pk=item["id"])
        assert (insurer.code, insurer.protocol, insurer.webhook_secret_primary) == (
            item["code"],
            item["protocol"],
            item["webhook_secret"],
        )
    for item in printed["employers"]:
        for policy_item in item["policies"]:
            policy = Policy.objects.get(number=policy_item["number"])
            assert policy.employer.code == item["code"]
            assert policy.insurer.code == policy_item["insurer_code"]
            assert [
                (plan.code, plan.sum_insured_options) for plan in policy.plans.order_by("code")
            ] == sorted((plan["code"], plan["sum_insured_options"]) for plan in policy_item["plans"])


def test_insurers_point_at_the_sandbox_on_loopback(settings):
    seed_json()
    # the sandbox insurer's own ports, not EMS's web server
    expected = {
        "REST": "http://127.0.0.1:8765",
        "SOAP": "http://127.0.0.1:8766/?wsdl",
        "SFTP": "sftp://sandbox@127.0.0.1:8722/",
    }
    assert dict(Insurer.objects.values_list("protocol", "endpoint_url")) == expected
    assert Insurer.objects.get(protocol="REST").credentials == {"bearer_token": settings.SANDBOX_REST_TOKEN}
    # and however often seeding runs: an insurer pointed elsewhere is pointed back
    Insurer.objects.filter(protocol="REST").update(endpoint_url="http://elsewhere.invalid", credentials={})
    seed_json()
    assert dict(Insurer.objects.values_list("protocol", "endpoint_url")) == expected
    assert Insurer.objects.get(protocol="REST").credentials == {"bearer_token": settings.SANDBOX_REST_TOKEN}


def test_seeding_twice_creates_nothing_and_moves_no_money(client):
    # given: one run
    first = seed_json()
    before, balances = counts(), money()
    # when: a second run
    second = seed_json()
    # then: nothing new, no money moved, and the same credentials printed
    assert counts() == before
    assert money() == balances
    assert second == first
    # and the second run's credentials still work
    for employer in second["employers"]:
        response = token_response(client, **employer["api_client"])
        assert response.status_code == 200, employer["code"]
        hr = employer["hr_user"]
        assert client.login(username=hr["username"], password=hr["password"]) is True
        client.logout()
    for user in second["ops_users"]:
        assert client.login(username=user["username"], password=user["password"]) is True
        client.logout()


def test_the_second_run_reports_nothing_created():
    first = demo_seed()
    second = demo_seed()
    assert first.created["members"] == first.totals["members"]
    assert first.created["coverages"] == first.totals["members"]
    assert first.created["topups"] == first.totals["accounts"] == 6
    assert set(second.created.values()) == {0}
    assert second.totals == first.totals


def test_volumes_are_a_few_hundred_members_on_active_cover():
    result = demo_seed()
    members = Member.objects.count()
    assert 300 <= members <= 1000
    assert result.totals == {
        "insurers": 3,
        "employers": 4,
        "policies": 6,
        "members": members,
        "coverages": members,
        "accounts": 6,
    }
    assert Member.objects.filter(relation="SELF").count() == 200
    assert set(Member.objects.exclude(relation="SELF").values_list("relation", flat=True)) == {
        "SPOUSE",
        "CHILD",
        "PARENT",
    }
    # every member has exactly one active coverage, on a policy of their own employer
    assert Coverage.objects.filter(status="ACTIVE").count() == members
    assert not Coverage.objects.exclude(policy__employer=F("member__employer")).exists()
    # dependants hang off an employee of the same employer and code
    for dependant in Member.objects.exclude(relation="SELF").select_related("primary"):
        assert dependant.primary.relation == "SELF"
        assert (dependant.primary.employer_id, dependant.primary.employee_code) == (
            dependant.employer_id,
            dependant.employee_code,
        )


def test_every_member_is_within_the_plan_age_limits_and_has_a_rate():
    demo_seed()
    for coverage in Coverage.objects.select_related("member", "plan", "policy"):
        member, plan = coverage.member, coverage.plan
        start = coverage.policy.start_date
        born = member.date_of_birth
        age = start.year - born.year - ((start.month, start.day) < (born.month, born.day))
        low, high = plan.age_limits[member.relation]
        assert low <= age <= high, (member, age)
        assert coverage.sum_insured in plan.sum_insured_options
        assert (
            PlanRate.objects.filter(
                plan=plan,
                relation=member.relation,
                sum_insured=coverage.sum_insured,
                age_from__lte=age,
                age_to__gte=age,
            ).count()
            == 1
        ), (member, age)


def test_rate_cards_are_worked_figures_in_paise():
    demo_seed()
    plan = Plan.objects.get(policy__number="GHI-ACME-001", code="STD")
    plus = Plan.objects.get(policy__number="GHI-ACME-001", code="PLUS")
    # ₹2,200 per lakh × 3 lakh = ₹6,600
    assert (
        PlanRate.objects.get(plan=plan, relation="SELF", age_from=18, sum_insured=300_000).annual_premium
        == 660_000
    )
    # ₹2,200 × 5 × 90% (size) × 115% (Plus) = ₹11,385 → ₹11,390 (half up to ₹10)
    assert (
        PlanRate.objects.get(plan=plus, relation="SELF", age_from=18, sum_insured=500_000).annual_premium
        == 1_139_000
    )
    # ₹9,500 × 10 × 75% × 115% = ₹81,937.50 → ₹81,940
    assert annual_premium_minor(per_lakh=9_500, sum_insured=1_000_000, factor_percent=115) == 8_194_000
    # 13 bands × 2 sums insured per plan
    assert PlanRate.objects.filter(plan=plan).count() == 26


def test_policies_run_over_the_indian_financial_year_containing_today():
    demo_seed(today=datetime.date(2027, 2, 10))
    assert set(Policy.objects.values_list("start_date", "end_date")) == {
        (datetime.date(2026, 4, 1), datetime.date(2027, 3, 31))
    }
    assert policy_year(datetime.date(2026, 4, 1)) == (datetime.date(2026, 4, 1), datetime.date(2027, 3, 31))
    assert policy_year(datetime.date(2026, 3, 31)) == (datetime.date(2025, 4, 1), datetime.date(2026, 3, 31))


def test_each_employer_insurer_account_is_funded_once_through_the_ledger():
    # when: seeding twice
    demo_seed()
    demo_seed()
    # then: one account per employer × insurer, each with one approved opening top-up
    pairs = set(Policy.objects.values_list("employer_id", "insurer_id"))
    assert set(Account.objects.values_list("employer_id", "insurer_id")) == pairs
    assert len(pairs) == 6
    assert set(Account.objects.values_list("posted", "held", "low_balance_threshold")) == {
        (OPENING_BALANCE, 0, LOW_BALANCE_THRESHOLD)
    }
    assert OPENING_BALANCE == 2_500_000_000  # ₹2,50,00,000 in paise
    assert Entry.objects.count() == 6
    assert set(Entry.objects.values_list("kind", "amount", "balance_after")) == {
        ("TOPUP", OPENING_BALANCE, OPENING_BALANCE)
    }
    finance = get_user_model().objects.get(username="ops.finance")
    assert set(TopUp.objects.values_list("state", "requested_by", "decided_by", "idempotency_key")) == {
        ("APPROVED", "system:seed_demo", finance.pk, "demo-opening-topup")
    }


def test_hr_users_are_linked_non_staff_and_clients_act_for_their_employer(client):
    printed = seed_json()
    for employer in printed["employers"]:
        user = get_user_model().objects.get(username=employer["hr_user"]["username"])
        assert user.is_staff is False
        assert user.employer_membership.employer.code == employer["code"]
        api_client = ApiClient.objects.get(client_id=employer["api_client"]["client_id"])
        assert api_client.employer.code == employer["code"]
        assert api_client.secret_hash != employer["api_client"]["client_secret"]


def test_ops_users_are_staff_in_their_group_with_its_permissions():
    printed = seed_json()
    User = get_user_model()
    users = {item["username"]: User.objects.get(username=item["username"]) for item in printed["ops_users"]}
    for item in printed["ops_users"]:
        user = users[item["username"]]
        assert user.is_staff is True
        assert user.is_superuser is False
        assert list(user.groups.values_list("name", flat=True)) == item["groups"]

    viewer, operator, finance = users["ops.viewer"], users["ops.operator"], users["ops.finance"]
    assert viewer.has_perm("endorsements.view_endorsementrequest")
    assert viewer.has_perm("ledger.view_account")
    assert not viewer.has_perm("endorsements.change_endorsementrequest")
    assert not viewer.has_perm("ledger.approve_topup")
    assert operator.has_perm("endorsements.change_endorsementrequest")
    assert operator.has_perm("endorsements.change_endorsementbatch")
    assert not operator.has_perm("ledger.approve_topup")
    assert finance.has_perm("ledger.approve_topup")
    assert finance.has_perm("ledger.approve_adjustment")
    assert not finance.has_perm("endorsements.change_endorsementrequest")


def test_a_revoked_demo_client_is_restored_by_the_next_seed(client):
    # given: the demo client of acme revoked by ops
    printed = seed_json()
    acme = next(item for item in printed["employers"] if item["code"] == "acme")
    api_client_revoke(client=ApiClient.objects.get(client_id=acme["api_client"]["client_id"]), actor="user:1")
    assert token_response(client, **acme["api_client"]).status_code == 401
    # when
    again = seed_json()
    # then: the printed credentials work again
    assert again == printed
    assert token_response(client, **acme["api_client"]).status_code == 200


def test_credentials_follow_the_secret_key(client, settings):
    # given: data seeded under one SECRET_KEY
    first = seed_json()
    # when: seeding again under another key (the old one a fallback, as Django's rotation asks:
    # the secrets at rest are encrypted under keys derived from both)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "another-secret-key-for-this-test-0123456789abcdef"
    second = seed_json()
    # then: new secrets are printed, stored, and work; nothing else is created
    acme_first = next(item for item in first["employers"] if item["code"] == "acme")
    acme_second = next(item for item in second["employers"] if item["code"] == "acme")
    assert acme_second["api_client"]["client_id"] == acme_first["api_client"]["client_id"]
    assert acme_second["api_client"]["client_secret"] != acme_first["api_client"]["client_secret"]
    assert acme_second["hr_user"]["password"] != acme_first["hr_user"]["password"]
    assert ApiClient.objects.count() == 4
    assert token_response(client, **acme_first["api_client"]).status_code == 401
    assert token_response(client, **acme_second["api_client"]).status_code == 200
    hr = acme_second["hr_user"]
    assert client.login(username=hr["username"], password=hr["password"]) is True
    # webhook secrets are printed as stored: an existing insurer keeps its secret
    assert second["insurers"] == first["insurers"]


def test_the_human_summary_names_every_login():
    printed = seed_json()
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    summary = out.getvalue()
    assert summary.startswith("Demo data: 3 insurers, 4 employers, 6 policies")
    assert "Created by this run: nothing." in summary
    for user in printed["ops_users"]:
        assert f"{user['username']}" in summary
        assert user["password"] in summary
    for employer in printed["employers"]:
        assert employer["hr_user"]["password"] in summary
        assert employer["api_client"]["client_secret"] in summary
