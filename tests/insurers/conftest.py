"""The sandbox insurer for the gateway's tests: one real `run_sandbox` process per session.

It serves every face on free loopback ports with its data in a temporary folder
(`insurers.sandbox.process.sandbox_start`); tests change its behaviour through its own
switches endpoint (`sandbox.switches(...)`), and each test starts from the default switches.
"""

import pytest

from ems.outbox import OutboxEvent
from ems.outbox_relay import relay_pending
from insurers.sandbox.process import sandbox_start
from tests.factories import InsurerFactory


def exchanges_relay() -> int:
    """Deliver the queued exchange documents to MongoDB now; returns how many went."""
    return relay_pending(sink=OutboxEvent.Sink.MONGO).sinks[OutboxEvent.Sink.MONGO].delivered


def rest_insurer(sandbox, **fields):
    """An insurer reaching the sandbox's REST face with its bearer token; `fields` override."""
    return InsurerFactory(
        protocol="REST",
        endpoint_url=sandbox.faces["rest"],
        credentials={"bearer_token": sandbox.token},
        **fields,
    )


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory):
    server = sandbox_start(data_dir=tmp_path_factory.mktemp("sandbox"), token="sandbox-test-token")
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server):
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.reset()
