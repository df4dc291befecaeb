"""factory_boy factories for the domain, plus fixtures that build common callers."""

import datetime

import factory
import pytest
from django.contrib.auth import get_user_model

from ems.auth import new_client_credentials
from ems.models import ApiClient, Employer, EmployerMembership
from endorsements.models import (
    Coverage,
    Member,
    Plan,
    PlanRate,
    Policy,
)
from insurers.models import Insurer
from ledger.models import Account


class InsurerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Insurer

    code = factory.Sequence(lambda n: f"ins{n}")
    name = factory.Sequence(lambda n: f"Insurer {n}")
    protocol = Insurer.Protocol.REST
    endpoint_url = "http://127.0.0.1:9/"
    webhook_secret_primary = factory.Sequence(lambda n: f"whsec_test_{n:032d}")


class EmployerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Employer

    code = factory.Sequence(lambda n: f"emp{n}")
    name = factory.Sequence(lambda n: f"Employer {n}")


class PolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Policy

    employer = factory.SubFactory(EmployerFactory)
    insurer = factory.SubFactory(InsurerFactory)
    number = factory.Sequence(lambda n: f"POL-{n:05d}")
    start_date = datetime.date(2026, 4, 1)
    end_date = datetime.date(2027, 3, 31)
    tax_rate_bps = 1800


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    policy = factory.SubFactory(PolicyFactory)
    code = factory.Sequence(lambda n: f"PLAN{n}")
    name = "Standard"
    sum_insured_options = [300000, 500000]
    age_limits = {
        "SELF": [18, 65],
        "SPOUSE": [18, 65],
        "CHILD": [0, 25],
        "PARENT": [35, 80],
        "PARENT_IN_LAW": [35, 80],
    }


class PlanRateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PlanRate

    plan = factory.SubFactory(PlanFactory)
    relation = "SELF"
    age_from = 18
    age_to = 65
    sum_insured = 500000
    annual_premium = 1_200_000


class MemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Member

    employer = factory.SubFactory(EmployerFactory)
    employee_code = factory.Sequence(lambda n: f"E{n:05d}")
    relation = "SELF"
    first_name = factory.Sequence(lambda n: f"Person{n}")
    last_name = "Tester"
    date_of_birth = datetime.date(1990, 1, 15)
    gender = "F"
    date_of_joining = datetime.date(2026, 4, 1)


class CoverageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Coverage

    member = factory.SubFactory(MemberFactory)
    plan = factory.SubFactory(PlanFactory)
    policy = factory.SelfAttribute("plan.policy")
    sum_insured = 500000
    start_date = datetime.date(2026, 4, 1)
    status = Coverage.Status.ACTIVE


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account

    employer = factory.SubFactory(EmployerFactory)
    insurer = factory.SubFactory(InsurerFactory)


class BatchFactory(factory.django.DjangoModelFactory):
    """An uploaded CSV file's batch, PROCESSING unless told otherwise."""

    class Meta:
        model = "endorsements.EndorsementBatch"

    employer = factory.SubFactory(EmployerFactory)
    source = "CSV"
    file_format = "CSV"
    file_name = "people.csv"
    state = "PROCESSING"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "pass-Word-123")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


def api_client_create(*, employer: Employer, name: str = "HRIS") -> tuple[ApiClient, str]:
    client_id, secret, secret_hash = new_client_credentials()
    client = ApiClient.objects.create(
        employer=employer, name=name, client_id=client_id, secret_hash=secret_hash
    )
    return client, secret


def hr_user_create(*, employer: Employer, username: str | None = None):
    user = UserFactory(**({"username": username} if username else {}))
    EmployerMembership.objects.create(user=user, employer=employer)
    return user


@pytest.fixture
def employer(db):
    return EmployerFactory()


@pytest.fixture
def api(db, employer):
    """A DRF APIClient authenticated as a fresh API client of `employer` (bearer token)."""
    from rest_framework.test import APIClient

    client, secret = api_client_create(employer=employer)
    http = APIClient()
    response = http.post(
        "/api/v1/auth/token",
        {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret},
        format="json",
    )
    assert response.status_code == 200, response.content
    http.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access_token']}")
    http.api_client = client
    return http
