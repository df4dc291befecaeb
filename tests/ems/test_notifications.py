"""The notifications websocket over the real Redis channel layer."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections, transaction

from ems.asgi import application
from ems.notifications import notify_employer
from tests.factories import EmployerFactory, UserFactory, hr_user_create

pytestmark = pytest.mark.django_db(transaction=True)


async def connect_as(client, user) -> WebsocketCommunicator:
    await database_sync_to_async(client.force_login)(user)
    cookie = client.cookies["sessionid"].value
    communicator = WebsocketCommunicator(
        application,
        "/ws/notifications/",
        headers=[
            (b"cookie", f"sessionid={cookie}".encode()),
            (b"origin", b"http://localhost"),
            (b"host", b"localhost"),
        ],
    )
    return communicator


async def closing_executor_connections(scenario) -> None:
    """Run a scenario, then close the connection of asgiref's executor thread, where
    database_sync_to_async runs: it would outlive the test and keep the test database
    from being dropped at the end of the run."""
    try:
        await scenario
    finally:
        await database_sync_to_async(connections.close_all)()


def test_an_hr_user_receives_their_employers_notifications_after_commit(client):
    employer, other = EmployerFactory(), EmployerFactory()
    user = hr_user_create(employer=employer)

    async def scenario():
        communicator = await connect_as(client, user)
        connected, _ = await communicator.connect()
        assert connected

        def emit():
            with transaction.atomic():
                notify_employer(other.pk, "batch.progress", {"batch_id": 2})
                notify_employer(employer.pk, "batch.progress", {"batch_id": 1, "progress": 40})
            with transaction.atomic():
                notify_employer(employer.pk, "batch.progress", {"batch_id": 99})
                transaction.set_rollback(True)

        await database_sync_to_async(emit)()
        message = await communicator.receive_json_from(timeout=5)
        assert message == {"event": "batch.progress", "data": {"batch_id": 1, "progress": 40}}
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()

    asyncio.run(closing_executor_connections(scenario()))


def test_anonymous_and_unlinked_users_are_closed(client):
    async def scenario():
        anonymous = WebsocketCommunicator(
            application,
            "/ws/notifications/",
            headers=[(b"origin", b"http://localhost"), (b"host", b"localhost")],
        )
        connected, code = await anonymous.connect()
        assert (connected, code) == (False, 4401)
        unlinked = await connect_as(client, await database_sync_to_async(UserFactory)())
        connected, code = await unlinked.connect()
        assert (connected, code) == (False, 4403)

    asyncio.run(closing_executor_connections(scenario()))
