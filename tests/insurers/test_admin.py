"""The gateway in the operations admin: dispatches with their items and exchanges, the breaker's reset."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from insurers.models import Insurer
from insurers.services import dispatch_create, dispatch_send
from tests.factories import InsurerFactory, UserFactory
from tests.insurers.conftest import exchanges_relay, rest_insurer
from tests.insurers.test_rest_adapter import payload

pytestmark = pytest.mark.django_db(transaction=True)


def ops_user(role: str):
    user = UserFactory(username=f"gw-{role}", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def test_dispatch_page_shows_items_and_exchanges(client, sandbox, mongo_db):
    insurer = rest_insurer(sandbox)
    dispatch = dispatch_create(
        insurer=insurer, items=[{"reference": "ADM-1", "kind": "ADD", "payload": payload("ADM-1")}]
    )
    dispatch_send(dispatch_id=dispatch.pk)
    assert exchanges_relay() >= 1
    client.force_login(ops_user("ops_viewer"))
    response = client.get(reverse("admin:insurers_dispatch_change", args=[dispatch.pk]))
    page = response.content.decode()
    reference = dispatch.items.get().reference
    assert reference in page
    assert "Confirmed" in page
    assert "₹7,080.00" in page  # the insurer's premium, in rupees
    assert "Exchanges with the insurer" in page and "No exchange recorded yet" not in page
    assert sandbox.token not in page
    listing = client.get(reverse("admin:insurers_dispatch_changelist"), {"q": reference}).content.decode()
    assert dispatch.idempotency_key in listing


def test_operator_resets_the_breaker_and_viewer_cannot(client):
    insurer = InsurerFactory(circuit_state="OPEN", circuit_failures=5)
    url = reverse("admin:insurers_insurer_changelist")
    form = {"action": "reset_circuit", "_selected_action": [insurer.pk]}
    # a viewer is not offered the action: nothing changes
    client.force_login(ops_user("ops_viewer"))
    client.post(url, form)
    insurer.refresh_from_db()
    assert (insurer.circuit_state, insurer.circuit_failures) == ("OPEN", 5)
    # an operator resets it
    client.force_login(ops_user("ops_operator"))
    response = client.post(url, form, follow=True)
    assert "Circuit closed for 1 insurer(s)." in response.content.decode()
    insurer.refresh_from_db()
    assert (insurer.circuit_state, insurer.circuit_failures) == (Insurer.CircuitState.CLOSED, 0)
