"""`manage.py create_api_client`: credentials printed once, stored hashed, usable for a token."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ems.auth import hash_secret
from ems.models import ApiClient, OutboxEvent
from tests.factories import EmployerFactory

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]


def run_command(*args) -> dict:
    out = io.StringIO()
    call_command("create_api_client", *args, stdout=out)
    return json.loads(out.getvalue())


def test_prints_exactly_client_id_and_secret_and_stores_only_the_hash(client):
    # given
    employer = EmployerFactory(code="acme")
    # when
    printed = run_command("--employer", "acme", "--name", "Workday")
    # then
    assert set(printed) == {"client_id", "client_secret"}
    stored = ApiClient.objects.get(client_id=printed["client_id"])
    assert stored.employer == employer
    assert stored.name == "Workday"
    assert stored.is_active is True
    assert stored.secret_hash == hash_secret(printed["client_secret"])
    assert stored.secret_hash != printed["client_secret"]
    assert printed["client_secret"] not in stored.secret_hash
    audit = OutboxEvent.objects.get(destination="audit_logs", payload__action="api_client.created")
    assert audit.payload["object_id"] == str(stored.pk)
    assert printed["client_secret"] not in json.dumps(audit.payload)

    response = client.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", **printed},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"


def test_the_output_is_one_json_line():
    EmployerFactory(code="acme")
    out = io.StringIO()
    call_command("create_api_client", "--employer", "acme", stdout=out)
    assert out.getvalue().count("\n") == 1
    assert ApiClient.objects.get().name == "API client"


@pytest.mark.parametrize(
    "employer_code, active, message",
    [
        ("nope", True, "Unknown employer code 'nope'."),
        ("acme", False, "Employer 'acme' is inactive."),
    ],
)
def test_unknown_or_inactive_employer_is_refused_and_nothing_is_created(employer_code, active, message):
    EmployerFactory(code="acme", is_active=active)
    with pytest.raises(CommandError) as refused:
        run_command("--employer", employer_code)
    assert str(refused.value) == message
    assert ApiClient.objects.count() == 0
    assert OutboxEvent.objects.count() == 0


def test_unknown_employer_exits_non_zero_from_the_shell():
    # a real process: the exit status and stderr a script sees (no rows needed, so the
    # uncommitted test transaction does not matter)
    settings_dict = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ems.settings.test",
        "DATABASE_URL": (
            f"postgres://{settings_dict['USER']}:{settings_dict['PASSWORD'] or ''}"
            f"@{settings_dict['HOST'] or '127.0.0.1'}:{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
        ),
    }
    completed = subprocess.run(
        [sys.executable, "manage.py", "create_api_client", "--employer", "nope"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert "CommandError: Unknown employer code 'nope'." in completed.stderr
