import pytest

pytestmark = pytest.mark.django_db


def test_metrics_are_exposed_in_prometheus_format(client):
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert "django_http_requests_total_by_method_total" in text
    assert "# TYPE" in text


def test_openapi_schema_is_valid_json_with_the_token_endpoint(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/auth/token" in schema["paths"]


def test_interactive_docs_page_is_served(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_cors_allows_only_configured_origins(client, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://hris.example.com"]
    allowed = client.options(
        "/api/v1/auth/token",
        HTTP_ORIGIN="https://hris.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert allowed["Access-Control-Allow-Origin"] == "https://hris.example.com"
    refused = client.options(
        "/api/v1/auth/token",
        HTTP_ORIGIN="https://evil.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert "Access-Control-Allow-Origin" not in refused


def test_business_gauges_are_read_from_the_database_at_scrape_time(client):
    from django.db import transaction

    from ems.outbox import document_emit

    with transaction.atomic():
        document_emit(collection="audit_logs", document={"n": 1})
        document_emit(collection="audit_logs", document={"n": 2})
    text = client.get("/metrics").content.decode()
    assert 'ems_outbox_pending{sink="MONGO"} 2.0' in text
    assert 'ems_outbox_pending{sink="KAFKA"} 0.0' in text
