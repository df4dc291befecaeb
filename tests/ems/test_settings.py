"""Settings: production passes `check --deploy`; embedded defaults when nothing is set."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_manage(args: list[str], env: dict) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ALLOWED_HOSTS"}
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_production_settings_pass_check_deploy_with_no_warnings():
    result = run_manage(
        ["check", "--deploy", "--fail-level", "WARNING"],
        {
            "DJANGO_SETTINGS_MODULE": "ems.settings.production",
            "SECRET_KEY": "prod-" + "k3y!" * 16,
            "ALLOWED_HOSTS": "ems.example.com",
            "DATABASE_URL": "postgres://ems@db.example.com:5432/ems",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key():
    result = run_manage(
        ["check"],
        {
            "DJANGO_SETTINGS_MODULE": "ems.settings.production",
            "ALLOWED_HOSTS": "x",
            "DATABASE_URL": "sqlite:///x",
        },
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_embedded_defaults_when_nothing_is_configured():
    result = run_manage(
        [
            "shell",
            "-v",
            "0",
            "-c",
            "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], "
            "s.DATABASES['default']['OPTIONS']['transaction_mode'], "
            "s.KAFKA_BOOTSTRAP_SERVERS, s.REDIS_URL, s.MONGO_URL)",
        ],
        {"DJANGO_SETTINGS_MODULE": "ems.settings.base"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.sqlite3",
        "IMMEDIATE",
        "[]",
        "redis://127.0.0.1:6390/0",
        "mongodb://127.0.0.1:27117/",
    ]
