"""The per-insurer circuit breaker and the shared rate limit, against the sandbox over HTTP."""

import time

import pytest

from insurers import breaker
from insurers.adapters.base import TransientError
from insurers.models import Insurer
from insurers.services import dispatch_create, dispatch_send
from tests.insurers.conftest import rest_insurer
from tests.insurers.test_rest_adapter import payload

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def insurer(sandbox):
    return rest_insurer(
        sandbox,
        request_timeout_seconds=2,
        circuit_failure_threshold=2,
        circuit_cooldown_seconds=1,
        rate_limit_per_second=1000,
    )


def send(insurer, name):
    dispatch = dispatch_create(
        insurer=insurer, items=[{"reference": name, "kind": "ADD", "payload": payload(name)}]
    )
    return dispatch_send(dispatch_id=dispatch.pk)


def test_opens_refuses_without_calling_half_opens_and_closes(insurer, sandbox, monkeypatch):
    sandbox.switches(error_rate=1.0)
    # given two consecutive transient failures (the threshold)
    for name in ("B-1", "B-2"):
        with pytest.raises(TransientError):
            send(insurer, name)
    insurer.refresh_from_db()
    assert (insurer.circuit_state, insurer.circuit_failures) == ("OPEN", 2)
    assert "answered 500" in insurer.circuit_last_error
    # when a third send comes during the cool-down, it is refused without calling the insurer
    calls = []
    from insurers.adapters import rest

    real_call = rest._call
    monkeypatch.setattr(rest, "_call", lambda *a, **k: calls.append(1) or real_call(*a, **k))
    with pytest.raises(TransientError) as refused:
        send(insurer, "B-3")
    assert refused.value.code == "circuit_open"
    assert 0 < refused.value.retry_after <= 1
    assert calls == []
    # then after the cool-down one probe goes through; it fails, so the breaker opens again
    time.sleep(1.1)
    with pytest.raises(TransientError) as probe_failed:
        send(insurer, "B-4")
    assert probe_failed.value.code == "insurer_server_error"
    assert calls == [1]
    insurer.refresh_from_db()
    assert insurer.circuit_state == "OPEN"
    # and after another cool-down a successful probe closes it
    sandbox.switches(error_rate=0.0)
    time.sleep(1.1)
    assert [r.outcome for r in send(insurer, "B-5")] == ["confirmed"]
    insurer.refresh_from_db()
    assert (insurer.circuit_state, insurer.circuit_failures) == ("CLOSED", 0)


def test_half_open_lets_exactly_one_probe_through(insurer):
    Insurer.objects.filter(pk=insurer.pk).update(circuit_state="OPEN", circuit_opened_at="2000-01-01T00:00Z")
    breaker.call_admit(insurer)  # the first caller after the cool-down is the probe
    insurer.refresh_from_db()
    assert insurer.circuit_state == "HALF_OPEN"
    with pytest.raises(TransientError):
        breaker.call_admit(insurer)  # a second caller waits for the probe's verdict


def test_reset_closes_the_breaker(insurer):
    Insurer.objects.filter(pk=insurer.pk).update(
        circuit_state="OPEN", circuit_failures=9, circuit_last_error="x"
    )
    breaker.breaker_reset(insurer=insurer)
    insurer.refresh_from_db()
    assert (insurer.circuit_state, insurer.circuit_failures, insurer.circuit_last_error) == ("CLOSED", 0, "")


def test_rate_limit_is_shared_and_paces_calls(insurer):
    insurer.rate_limit_per_second = 5
    insurer.save(update_fields=["rate_limit_per_second"])
    started = time.monotonic()
    for _ in range(10):
        breaker.rate_limit_wait(insurer)
    # ten calls at five a second need at least one more window after the first five
    assert time.monotonic() - started >= 0.9
