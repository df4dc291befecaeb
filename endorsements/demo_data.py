"""Demo data for `make run` and scripts: insurers, employers, policies, members, logins.

How it works
- `demo_seed()` builds everything in one transaction and is idempotent: each row is found
  by its natural key (insurer code, employer code, policy number, plan code, employee
  code, username, client id) and created only when missing; existing rows are left alone.
- Members and coverages are generated deterministically (a `random.Random` seeded by the
  employer code) and written with `bulk_create`; an employee who already exists is skipped
  together with their dependants.
- Every secret it prints — HR and ops passwords, API client secrets, webhook secrets — is
  derived from `settings.SECRET_KEY` with HMAC-SHA256 (`demo_secret`). A second run can so
  print working credentials without storing anything in clear: passwords are re-set and
  client secret hashes re-written only when they no longer match (e.g. SECRET_KEY
  changed, or someone revoked the demo client). Webhook secrets are printed as stored.
- Ledger accounts are opened per employer × insurer and funded through the ledger's
  services only: an opening top-up (maker `system:seed_demo`) approved by the demo finance
  approver (`ops.finance`), once per account (idempotency key `demo-opening-topup`).
"""

import base64
import datetime
import hashlib
import hmac
import random
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from ems.identity import api_client_ensure
from ems.models import Employer, EmployerMembership
from endorsements.models import (
    Coverage,
    Gender,
    Member,
    Plan,
    PlanRate,
    Policy,
    Relation,
)
from insurers.models import Insurer
from insurers.sandbox.access import sandbox_connection, sandbox_credentials, sandbox_endpoint
from insurers.sandbox.webhook_sender import webhook_targets_for
from ledger import approvals as ledger_approvals
from ledger import services as ledger_services
from ledger.models import Account, TopUp

SEED_ACTOR = "system:seed_demo"
OPENING_TOPUP_KEY = "demo-opening-topup"
OPENING_BALANCE = 25_000_000_00  # ₹2,50,00,000 in paise per account
LOW_BALANCE_THRESHOLD = 5_00_000_00  # ₹5,00,000


def demo_secret(purpose: str, *, length: int = 32) -> str:
    """A stable secret for one demo credential, unguessable without SECRET_KEY."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"ems.demo:{purpose}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:length]


def demo_password(username: str) -> str:
    return f"demo-{demo_secret(f'password:{username}', length=16)}"


# --- what gets created ------------------------------------------------------------------


@dataclass(frozen=True)
class InsurerSpec:
    code: str
    name: str
    protocol: str


@dataclass(frozen=True)
class EmployerSpec:
    code: str
    name: str
    contact_name: str
    employees: int
    policies: tuple[tuple[str, str], ...]  # (insurer code, policy number)


@dataclass(frozen=True)
class OpsUserSpec:
    username: str
    first_name: str
    groups: tuple[str, ...]


INSURERS = (
    InsurerSpec("sbx-rest", "Sandbox Health Insurance (REST)", Insurer.Protocol.REST),
    InsurerSpec("sbx-soap", "Sandbox General Assurance (SOAP)", Insurer.Protocol.SOAP),
    InsurerSpec("sbx-sftp", "Sandbox Mutual Insurance (SFTP)", Insurer.Protocol.SFTP),
)

EMPLOYERS = (
    EmployerSpec("acme", "Acme Textiles Pvt Ltd", "Priya Raman", 60, (("sbx-rest", "GHI-ACME-001"),)),
    EmployerSpec(
        "bluepeak",
        "Bluepeak Software Services Ltd",
        "Arjun Mehta",
        55,
        (("sbx-rest", "GHI-BLUEPEAK-001"), ("sbx-soap", "GMC-BLUEPEAK-001")),
    ),
    EmployerSpec("coastal", "Coastal Logistics LLP", "Fatima Shaikh", 40, (("sbx-sftp", "GHI-COASTAL-001"),)),
    EmployerSpec(
        "deccan",
        "Deccan Pharma Ltd",
        "Vikram Rao",
        45,
        (("sbx-soap", "GMC-DECCAN-001"), ("sbx-sftp", "GHI-DECCAN-001")),
    ),
)

OPS_USERS = (
    OpsUserSpec("ops.viewer", "Olivia", ("ops_viewer",)),
    OpsUserSpec("ops.operator", "Omar", ("ops_operator",)),
    OpsUserSpec("ops.finance", "Farah", ("finance_approver",)),
)

PLAN_AGE_LIMITS = {
    "SELF": [18, 65],
    "SPOUSE": [18, 65],
    "CHILD": [0, 25],
    "PARENT": [36, 80],
    "PARENT_IN_LAW": [36, 80],
}

# (code, name, sum insured options in rupees, price factor in percent)
PLANS = (
    ("STD", "Standard", [300_000, 500_000], 100),
    ("PLUS", "Plus", [500_000, 1_000_000], 115),
)

# Annual premium in rupees per ₹1 lakh of sum insured, by relation and age band.
RATE_BANDS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "SELF": ((18, 35, 2_200), (36, 45, 2_900), (46, 55, 4_300), (56, 65, 6_800)),
    "SPOUSE": ((18, 35, 2_200), (36, 45, 2_900), (46, 55, 4_300), (56, 65, 6_800)),
    "CHILD": ((0, 25, 1_400),),
    "PARENT": ((36, 60, 5_200), (61, 80, 9_500)),
    "PARENT_IN_LAW": ((36, 60, 5_200), (61, 80, 9_500)),
}

# Larger covers cost less per lakh (percent of the per-lakh rate).
SUM_INSURED_RATE_PERCENT = {300_000: 100, 500_000: 90, 1_000_000: 75}


def annual_premium_minor(*, per_lakh: int, sum_insured: int, factor_percent: int) -> int:
    """per-lakh rate × lakhs × size discount × plan factor, rounded half up to ₹10, in paise.

    e.g. ₹2,200/lakh on ₹5,00,000 in the Plus plan: 2,200 × 5 × 90% × 115% = ₹11,385 → ₹11,390.
    """
    # exact integer arithmetic: the product is in units of ₹1 / (100 000 × 100 × 100)
    numerator = per_lakh * sum_insured * SUM_INSURED_RATE_PERCENT[sum_insured] * factor_percent
    unit = 100_000 * 100 * 100 * 10  # ₹10
    tens_of_rupees = (numerator + unit // 2) // unit
    return tens_of_rupees * 10 * 100


# fmt: off
FIRST_NAMES_F = (
    "Aarti", "Ananya", "Deepa", "Divya", "Fatima", "Gauri", "Ishita", "Kavya", "Lakshmi", "Meera",
    "Neha", "Pooja", "Priya", "Rekha", "Sana", "Shreya", "Sneha", "Tanvi", "Uma", "Zoya",
)
FIRST_NAMES_M = (
    "Aarav", "Abhishek", "Aditya", "Arjun", "Farhan", "Gaurav", "Harish", "Imran", "Karthik", "Manoj",
    "Nikhil", "Pranav", "Rahul", "Rohan", "Sandeep", "Suresh", "Tarun", "Varun", "Vikram", "Yusuf",
)
LAST_NAMES = (
    "Agarwal", "Bhat", "Chatterjee", "Das", "Desai", "Gupta", "Iyer", "Joshi", "Kapoor", "Khan", "Kulkarni",
    "Menon", "Nair", "Patel", "Pillai", "Rao", "Reddy", "Shah", "Sharma", "Singh", "Verma",
)
# fmt: on


# --- the seeding service -----------------------------------------------------------------


@dataclass
class DemoSeedResult:
    payload: dict  # the DESIGN.md `seed_demo --json` shape
    created: dict[str, int] = field(default_factory=dict)  # rows created by this run, by kind
    totals: dict[str, int] = field(default_factory=dict)  # demo rows in the database, by kind


CREATED_KINDS = (
    "insurers", "employers", "policies", "plans", "plan_rates",
    "members", "coverages", "accounts", "topups", "users",
)  # fmt: skip


def policy_year(today: datetime.date) -> tuple[datetime.date, datetime.date]:
    """The Indian financial year (1 April - 31 March) containing `today`."""
    first_year = today.year if today.month >= 4 else today.year - 1
    return datetime.date(first_year, 4, 1), datetime.date(first_year + 1, 3, 31)


def demo_seed(*, today: datetime.date | None = None) -> DemoSeedResult:
    """Create (or find) all demo data; see the module docstring."""
    today = today or timezone.localdate()
    result = DemoSeedResult(payload={}, created=dict.fromkeys(CREATED_KINDS, 0))
    with transaction.atomic():
        insurers = _insurers_ensure(result)
        # the sandbox insurer signs its webhooks to EMS for these insurers with their secrets
        transaction.on_commit(lambda: webhook_targets_for(insurers.values()))
        groups = {
            name: Group.objects.get_or_create(name=name)[0] for spec in OPS_USERS for name in spec.groups
        }
        ops_payload = [_ops_user_ensure(spec, groups, result) for spec in OPS_USERS]
        employers_payload = [_employer_ensure(spec, insurers, today, result) for spec in EMPLOYERS]
        _accounts_fund(approver=get_user_model().objects.get(username="ops.finance"), result=result)
    result.payload = {
        "insurers": [
            {
                "id": insurer.pk,
                "code": insurer.code,
                "protocol": insurer.protocol,
                "webhook_secret": insurer.webhook_secret_primary,
            }
            for insurer in insurers.values()
        ],
        "employers": employers_payload,
        "ops_users": ops_payload,
    }
    employer_codes = [spec.code for spec in EMPLOYERS]
    result.totals = {
        "insurers": len(insurers),
        "employers": len(employer_codes),
        "policies": Policy.objects.filter(employer__code__in=employer_codes).count(),
        "members": Member.objects.filter(employer__code__in=employer_codes).count(),
        "coverages": Coverage.objects.filter(member__employer__code__in=employer_codes).count(),
        "accounts": Account.objects.filter(employer__code__in=employer_codes).count(),
    }
    return result


def _insurers_ensure(result: DemoSeedResult) -> dict[str, Insurer]:
    urls = {spec.code: sandbox_endpoint(spec.protocol) for spec in INSURERS}
    insurers = {}
    for spec in INSURERS:
        insurer, created = Insurer.objects.get_or_create(
            code=spec.code,
            defaults={
                "name": spec.name,
                "protocol": spec.protocol,
                "endpoint_url": urls[spec.code],
                "webhook_secret_primary": f"whsec_{demo_secret(f'webhook:{spec.code}', length=40)}",
                # short windows: a request sent from the portal or the API travels in seconds
                "dispatch_window_seconds": 10,
                "dispatch_batch_size": 500,
            },
        )
        # however often seed_demo runs, the demo insurers point at this machine's sandbox
        credentials = {**insurer.credentials, **sandbox_credentials(spec.protocol)}
        connection = {**insurer.connection, **sandbox_connection(spec.protocol)}
        current = (insurer.endpoint_url, insurer.credentials, insurer.connection)
        if current != (urls[spec.code], credentials, connection):
            insurer.endpoint_url, insurer.credentials, insurer.connection = (
                urls[spec.code],
                credentials,
                connection,
            )
            insurer.save(update_fields=["endpoint_url", "credentials", "connection"])
        result.created["insurers"] += created
        insurers[spec.code] = insurer
    return insurers


def _user_ensure(*, username: str, is_staff: bool, first_name: str, email: str, result: DemoSeedResult):
    password = demo_password(username)
    user, created = get_user_model().objects.get_or_create(
        username=username,
        defaults={"is_staff": is_staff, "first_name": first_name, "email": email},
    )
    result.created["users"] += created
    if created or not user.check_password(password) or not user.is_active or user.is_staff != is_staff:
        user.set_password(password)
        user.is_active, user.is_staff = True, is_staff
        user.save(update_fields=["password", "is_active", "is_staff"])
    return user, password


def _ops_user_ensure(spec: OpsUserSpec, groups: dict[str, Group], result: DemoSeedResult) -> dict:
    user, password = _user_ensure(
        username=spec.username,
        is_staff=True,
        first_name=spec.first_name,
        email=f"{spec.username}@ems.example",
        result=result,
    )
    user.groups.add(*(groups[name] for name in spec.groups))
    return {"username": user.username, "password": password, "groups": list(spec.groups)}


def _employer_ensure(spec: EmployerSpec, insurers: dict[str, Insurer], today: datetime.date, result) -> dict:
    employer, created = Employer.objects.get_or_create(
        code=spec.code,
        defaults={
            "name": spec.name,
            "contact_name": spec.contact_name,
            "contact_email": f"hr@{spec.code}.example",
            "contact_phone": "+912240000000",
        },
    )
    result.created["employers"] += created

    hr_username = f"hr.{spec.code}"
    hr_user, hr_password = _user_ensure(
        username=hr_username,
        is_staff=False,
        first_name=spec.contact_name.split()[0],
        email=f"{hr_username}@{spec.code}.example",
        result=result,
    )
    EmployerMembership.objects.get_or_create(user=hr_user, defaults={"employer": employer})

    client_secret = "demo_sk_" + demo_secret(f"api-client:{spec.code}", length=43)
    client = api_client_ensure(
        employer=employer,
        client_id=f"cli_demo_{spec.code}",
        name=f"{spec.name} HRIS (demo)",
        secret=client_secret,
        actor=SEED_ACTOR,
    )

    start, end = policy_year(today)
    policies = []
    for insurer_code, number in spec.policies:
        policy, created = Policy.objects.get_or_create(
            insurer=insurers[insurer_code],
            number=number,
            defaults={"employer": employer, "start_date": start, "end_date": end},
        )
        result.created["policies"] += created
        plans = [_plan_ensure(policy, plan, result) for plan in PLANS]
        policies.append((policy, plans))
        if not Account.objects.filter(employer=employer, insurer=insurers[insurer_code]).exists():
            ledger_services.account_open(
                employer_id=employer.pk,
                insurer_id=insurers[insurer_code].pk,
                low_balance_threshold=LOW_BALANCE_THRESHOLD,
                actor=SEED_ACTOR,
            )
            result.created["accounts"] += 1

    _members_ensure(spec, employer, policies, result)

    return {
        "code": employer.code,
        "hr_user": {"username": hr_user.username, "password": hr_password},
        "api_client": {"client_id": client.client_id, "client_secret": client_secret},
        "policies": [
            {
                "number": policy.number,
                "insurer_code": policy.insurer.code,
                "plans": [
                    {"code": plan.code, "sum_insured_options": list(plan.sum_insured_options)}
                    for plan in plans
                ],
            }
            for policy, plans in policies
        ],
    }


def _plan_ensure(policy: Policy, plan_spec: tuple, result: DemoSeedResult) -> Plan:
    code, name, options, factor = plan_spec
    plan, created = Plan.objects.get_or_create(
        policy=policy,
        code=code,
        defaults={"name": name, "sum_insured_options": options, "age_limits": PLAN_AGE_LIMITS},
    )
    result.created["plans"] += created
    existing = set(PlanRate.objects.filter(plan=plan).values_list("relation", "sum_insured", "age_from"))
    rates = [
        PlanRate(
            plan=plan,
            relation=relation,
            age_from=age_from,
            age_to=age_to,
            sum_insured=sum_insured,
            annual_premium=annual_premium_minor(
                per_lakh=per_lakh, sum_insured=sum_insured, factor_percent=factor
            ),
        )
        for relation, bands in RATE_BANDS.items()
        for age_from, age_to, per_lakh in bands
        for sum_insured in plan.sum_insured_options
        if (relation, sum_insured, age_from) not in existing
    ]
    PlanRate.objects.bulk_create(rates)
    result.created["plan_rates"] += len(rates)
    return plan


# --- members ----------------------------------------------------------------------------


@dataclass
class _Person:
    relation: str
    first_name: str
    last_name: str
    gender: str
    date_of_birth: datetime.date


@dataclass
class _Family:
    employee_code: str
    employee: _Person
    email: str
    phone: str
    date_of_joining: datetime.date
    dependants: list[_Person]
    policy_index: int
    plan_index: int
    sum_insured_index: int


def _birth_date(rng: random.Random, reference: datetime.date, age: int) -> datetime.date:
    return reference - datetime.timedelta(days=age * 365 + rng.randint(10, 350))


def _families(spec: EmployerSpec, policy_start: datetime.date, policy_count: int) -> list[_Family]:
    """The employer's demo workforce: the same list on every run."""
    rng = random.Random(f"ems-demo:{spec.code}")
    prefix = spec.code[:3].upper()
    families = []
    for number in range(1, spec.employees + 1):
        gender = rng.choice((Gender.FEMALE, Gender.MALE))
        first = rng.choice(FIRST_NAMES_F if gender == Gender.FEMALE else FIRST_NAMES_M)
        last = rng.choice(LAST_NAMES)
        age = rng.randint(22, 58)
        employee = _Person(Relation.SELF, first, last, gender, _birth_date(rng, policy_start, age))
        dependants = []
        if rng.random() < 0.65:
            spouse_gender = Gender.MALE if gender == Gender.FEMALE else Gender.FEMALE
            spouse_names = FIRST_NAMES_M if spouse_gender == Gender.MALE else FIRST_NAMES_F
            spouse_age = max(21, min(62, age + rng.randint(-5, 5)))
            dependants.append(
                _Person(
                    Relation.SPOUSE,
                    rng.choice(spouse_names),
                    last,
                    spouse_gender,
                    _birth_date(rng, policy_start, spouse_age),
                )
            )
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3)) if age >= 24 else 0):
                child_gender = rng.choice((Gender.FEMALE, Gender.MALE))
                names = FIRST_NAMES_F if child_gender == Gender.FEMALE else FIRST_NAMES_M
                child_age = rng.randint(0, min(24, age - 22))
                dependants.append(
                    _Person(
                        Relation.CHILD,
                        rng.choice(names),
                        last,
                        child_gender,
                        _birth_date(rng, policy_start, child_age),
                    )
                )
        if rng.random() < 0.25:
            for parent_gender in (Gender.MALE, Gender.FEMALE):
                names = FIRST_NAMES_M if parent_gender == Gender.MALE else FIRST_NAMES_F
                parent_age = min(78, age + rng.randint(22, 32))
                dependants.append(
                    _Person(
                        Relation.PARENT,
                        rng.choice(names),
                        last,
                        parent_gender,
                        _birth_date(rng, policy_start, parent_age),
                    )
                )
        # siblings never share a first name: names tell dependants apart in the upload file
        seen: set[str] = set()
        for person in dependants:
            while person.relation == Relation.CHILD and person.first_name in seen:
                person.first_name = rng.choice(
                    FIRST_NAMES_F if person.gender == Gender.FEMALE else FIRST_NAMES_M
                )
            seen.add(person.first_name)
        families.append(
            _Family(
                employee_code=f"{prefix}{number:04d}",
                employee=employee,
                email=f"{first}.{last}.{number}@{spec.code}.example".lower(),
                phone=f"+919{rng.randint(100_000_000, 999_999_999)}",
                date_of_joining=policy_start - datetime.timedelta(days=rng.randint(30, 365 * 12)),
                dependants=dependants,
                policy_index=(number - 1) % policy_count,
                plan_index=0 if rng.random() < 0.7 else 1,
                sum_insured_index=rng.randint(0, 1),
            )
        )
    return families


def _members_ensure(
    spec: EmployerSpec, employer: Employer, policies: list[tuple[Policy, list[Plan]]], result
) -> None:
    policy_start = min(policy.start_date for policy, _ in policies)
    existing = set(
        Member.objects.filter(employer=employer, relation=Relation.SELF).values_list(
            "employee_code", flat=True
        )
    )
    families = [
        family
        for family in _families(spec, policy_start, len(policies))
        if family.employee_code not in existing
    ]
    if not families:
        return

    employees = Member.objects.bulk_create(
        [
            Member(
                employer=employer,
                employee_code=family.employee_code,
                relation=Relation.SELF,
                first_name=family.employee.first_name,
                last_name=family.employee.last_name,
                date_of_birth=family.employee.date_of_birth,
                gender=family.employee.gender,
                email=family.email,
                phone=family.phone,
                date_of_joining=family.date_of_joining,
            )
            for family in families
        ]
    )
    dependant_rows, dependant_family = [], []
    for family, employee in zip(families, employees, strict=True):
        for person in family.dependants:
            dependant_rows.append(
                Member(
                    employer=employer,
                    employee_code=family.employee_code,
                    relation=person.relation,
                    primary=employee,
                    first_name=person.first_name,
                    last_name=person.last_name,
                    date_of_birth=person.date_of_birth,
                    gender=person.gender,
                )
            )
            dependant_family.append(family)
    dependants = Member.objects.bulk_create(dependant_rows)

    coverages = []
    for member, family in [
        *zip(employees, families, strict=True),
        *zip(dependants, dependant_family, strict=True),
    ]:
        policy, plans = policies[family.policy_index]
        plan = plans[family.plan_index]
        coverages.append(
            Coverage(
                member=member,
                policy=policy,
                plan=plan,
                sum_insured=plan.sum_insured_options[family.sum_insured_index],
                start_date=policy.start_date,
                status=Coverage.Status.ACTIVE,
                insurer_member_id=f"{policy.insurer.code.upper()}-{member.pk:08d}",
            )
        )
    Coverage.objects.bulk_create(coverages)
    result.created["members"] += len(employees) + len(dependants)
    result.created["coverages"] += len(coverages)


# --- money --------------------------------------------------------------------------------


def _accounts_fund(*, approver, result: DemoSeedResult) -> None:
    """Fund each demo account once: an opening top-up, approved by the demo finance approver.

    The top-up's idempotency key makes a re-run find it instead of paying twice; a top-up
    already decided (approved, or rejected by someone) is left as it is.
    """
    accounts = Account.objects.filter(employer__code__in=[spec.code for spec in EMPLOYERS]).order_by("pk")
    for account_id in accounts.values_list("pk", flat=True):
        topup = ledger_approvals.account_topup(
            account_id=account_id,
            amount=OPENING_BALANCE,
            payment_reference=f"DEMO-OPENING-{account_id}",
            idempotency_key=OPENING_TOPUP_KEY,
            requested_by=SEED_ACTOR,
        )
        if topup.state == TopUp.State.PENDING:
            ledger_approvals.topup_decide(topup_id=topup.pk, approver=approver, approve=True)
            result.created["topups"] += 1
