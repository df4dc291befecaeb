"""insurers/services.py: confirmations_poll / confirmations_poll_due, and the beat task that runs them."""

import time

import pytest
from django.test import override_settings

from insurers import services
from insurers.models import DispatchItem, Insurer
from insurers.tasks import confirmations_poll_sweep_task
from tests.factories import InsurerFactory
from tests.insurers.gateway_items import dispatch_of, payload, references, results_of, sftp_insurer_at

pytestmark = pytest.mark.django_db


def test_the_beat_task_records_response_files_and_a_failing_insurer_does_not_stop_the_others(sandbox):
    # Given an SFTP insurer with a sent dispatch, and one whose host key EMS does not know
    broken = sftp_insurer_at(sandbox, code="aa-broken")
    broken.connection = {**broken.connection, "known_hosts": ""}
    broken.save(update_fields=["connection"])
    insurer = sftp_insurer_at(sandbox, code="zz-working")
    (reference,) = references(1)
    dispatch = dispatch_of(insurer, payload(reference=reference))
    services.dispatch_send(dispatch_id=dispatch.pk)
    response = sandbox.data_dir / "sftp" / "outbox" / f"{dispatch.idempotency_key}.response.csv"
    deadline = time.monotonic() + 10
    while not response.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)

    # When the beat task runs: one poll task per polled insurer (the broken one first)
    with override_settings(CELERY_TASK_ALWAYS_EAGER=True):
        queued = confirmations_poll_sweep_task.delay().get()

    # Then the working insurer's answer is on its item, and the broken one changed nothing
    assert queued == 2
    assert results_of(dispatch) == [(reference, DispatchItem.Result.CONFIRMED, 1234600, "", False)]
    assert not DispatchItem.objects.filter(dispatch__insurer=broken).exists()


def test_an_inactive_or_rest_insurer_is_not_polled():
    # both unreachable: a poll would count a transient failure against their breakers
    inactive = InsurerFactory(protocol="SFTP", endpoint_url="sftp://sandbox@127.0.0.1:9/", is_active=False)
    rest = InsurerFactory(protocol="REST", endpoint_url="http://127.0.0.1:9/")
    unreachable = InsurerFactory(protocol="SFTP", endpoint_url="sftp://sandbox@127.0.0.1:9/")

    assert services.confirmations_poll_due() == 0

    failures = dict(Insurer.objects.values_list("pk", "circuit_failures"))
    assert (failures[inactive.pk], failures[rest.pk], failures[unreachable.pk]) == (0, 0, 1)
