import pytest

pytestmark = pytest.mark.django_db


def test_healthz_says_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_each_dependency_by_name(client, mongo_server, kafka_server):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"database", "redis", "mongo", "kafka"}
    assert all(check["ok"] for check in body["checks"].values())


def test_readyz_names_the_dependency_that_is_down(client, settings, mongo_server):
    from ems import clients
    from ems.embedded import free_port

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.KAFKA_BOOTSTRAP_SERVERS = []
    clients.reset()
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"]["ok"] is False
    assert "Connection" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["mongo"]["ok"] is True
    assert "kafka" not in body["checks"]
