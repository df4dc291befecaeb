"""The exchange log: every call to the insurer reaches MongoDB `insurer_exchanges`, secrets redacted."""

import logging

import pytest

from ems.audit import EXCHANGES_COLLECTION
from insurers.exchanges import REDACTED, mask_personal, redact
from insurers.services import dispatch_create, dispatch_send
from tests.factories import InsurerFactory
from tests.insurers.conftest import exchanges_relay
from tests.insurers.test_rest_adapter import payload

pytestmark = pytest.mark.django_db(transaction=True)

WEBHOOK_SECRET = "whsec_exchange_test_0123456789"
HMAC_SECRET = "hmac-secret-for-requests-9876543210"


def test_every_call_is_logged_without_any_secret(sandbox, mongo_db, caplog):
    caplog.set_level(logging.DEBUG)
    # given an insurer that signs its requests by HMAC and one that uses a bearer token
    signed = InsurerFactory(
        protocol="REST",
        endpoint_url=sandbox.faces["rest"],
        webhook_secret_primary=WEBHOOK_SECRET,
        credentials={"hmac_secret": HMAC_SECRET},
    )
    bearer = InsurerFactory(
        protocol="REST", endpoint_url=sandbox.faces["rest"], credentials={"bearer_token": sandbox.token}
    )
    refused = dispatch_create(
        insurer=signed, items=[{"reference": "X-1", "kind": "ADD", "payload": payload("X-1")}]
    )
    sent = dispatch_create(
        insurer=bearer, items=[{"reference": "X-2", "kind": "ADD", "payload": payload("X-2")}]
    )
    # when both dispatches are sent (the sandbox wants the bearer token, so the first is refused 401)
    with pytest.raises(Exception):  # noqa: B017 - PermanentError; the log is what this test reads
        dispatch_send(dispatch_id=refused.pk)
    dispatch_send(dispatch_id=sent.pk)
    assert exchanges_relay() >= 1
    # then each call is in MongoDB with its dispatch, tracking ids, status and duration
    documents = {doc["dispatch_id"]: doc for doc in mongo_db[EXCHANGES_COLLECTION].find({})}
    assert set(documents) == {refused.pk, sent.pk}
    ok = documents[sent.pk]
    assert (ok["status"], ok["operation"], ok["protocol"]) == ("200", "send", "REST")
    assert ok["tracking_ids"] == [sent.items.get().reference]
    assert ok["dispatch_key"] == sent.idempotency_key
    assert ok["duration_ms"] >= 0
    assert ok["request"]["headers"]["Authorization"] == REDACTED
    assert ok["response"]["results"][0]["outcome"] == "confirmed"
    assert documents[refused.pk]["status"] == "401"
    assert documents[refused.pk]["request"]["headers"]["X-Signature"] == REDACTED
    # and no secret appears anywhere: not in MongoDB, not in the logs
    everything = str(list(mongo_db[EXCHANGES_COLLECTION].find({}))) + caplog.text
    for secret in (WEBHOOK_SECRET, HMAC_SECRET, sandbox.token):
        assert secret not in everything


def test_redact_removes_secret_fields_and_values():
    body = {"password": "p4ss", "nested": [{"Authorization": "Bearer abc"}], "note": "token is s3cr3t-value"}
    assert redact(body, ["s3cr3t-value"]) == {
        "password": REDACTED,
        "nested": [{"Authorization": REDACTED}],
        "note": f"token is {REDACTED}",
    }


def test_mask_personal_keeps_ids_and_masks_people():
    body = {"items": [{"reference": "T-1", "first_name": "Asha", "date_of_birth": "1990-01-01", "phone": ""}]}
    assert mask_personal(body) == {
        "items": [{"reference": "T-1", "first_name": "***", "date_of_birth": "***", "phone": ""}]
    }
