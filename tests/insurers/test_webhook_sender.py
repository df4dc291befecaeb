"""insurers/sandbox/webhook_sender.py: what the sandbox sends, and where (its end-to-end run is in
test_webhook_live)."""

import io
import json

import pytest
from django.core.management import call_command

from insurers.models import Insurer
from insurers.sandbox.webhook_sender import TARGETS_FILE, event_of, insurer_code_of

pytestmark = pytest.mark.django_db


def test_the_insurer_code_is_read_from_the_dispatch_key():
    digest = "0123456789abcdef0123456789abcdef"
    assert insurer_code_of(f"dsp-sbx-rest-{digest}") == "sbx-rest"
    assert insurer_code_of(f"dsp-ins7-{digest}-g2") == "ins7"
    assert insurer_code_of("not-a-dispatch-key") == ""


def test_a_confirmed_result_becomes_a_complete_confirmation_event():
    result = {
        "reference": "T-1",
        "item_key": "itm-T-1",
        "outcome": "confirmed",
        "insurer_reference": "INS-1",
        "insurer_member_id": "M-1",
        "insurer_premium": 708_000,
        "code": "",
        "reason": "",
        "data": {"effective_date": "2026-12-01"},
    }
    sent = event_of(result)
    assert {k: sent[k] for k in ("event_id", "type", "tracking_id")} == {
        "event_id": "evt-itm-T-1-confirmed",
        "type": "endorsement.confirmed",
        "tracking_id": "T-1",
    }
    assert sent["data"] == {
        "insurer_reference": "INS-1",
        "insurer_member_id": "M-1",
        "insurer_premium": 708_000,
        "effective_date": "2026-12-01",
    }


def test_seed_demo_tells_the_sandbox_where_to_send_and_with_which_secret(
    settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.SANDBOX_DATA_DIR = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", "--json", stdout=io.StringIO())
    targets = json.loads((tmp_path / TARGETS_FILE).read_text())
    assert targets == {
        "insurers": {
            insurer.code: {"insurer_id": insurer.pk, "secret": insurer.webhook_secret_primary}
            for insurer in Insurer.objects.all()
        }
    }
