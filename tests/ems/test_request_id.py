import json
import logging

import pytest
import structlog

pytestmark = pytest.mark.django_db


def test_a_sane_request_id_is_echoed(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123.x:y")
    assert response["X-Request-ID"] == "abc-123.x:y"


@pytest.mark.parametrize("offered", ["", "has spaces", "x" * 129, "<script>"])
def test_an_unusable_request_id_is_replaced(client, offered):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=offered)
    generated = response["X-Request-ID"]
    assert generated != offered
    assert len(generated) == 32
    int(generated, 16)


def test_log_lines_are_json_and_carry_the_request_id(capsys):
    from ems.structured_logging import logging_config

    logging.config.dictConfig(logging_config("INFO"))
    structlog.contextvars.bind_contextvars(request_id="req-42")
    try:
        structlog.get_logger("ems.test").info("endorsement.validated", tracking_id="END-1")
        logging.getLogger("django.test").warning("stdlib line")
    finally:
        structlog.contextvars.clear_contextvars()
    lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert lines[0]["event"] == "endorsement.validated"
    assert lines[0]["request_id"] == "req-42"
    assert lines[0]["tracking_id"] == "END-1"
    assert lines[0]["level"] == "info"
    assert lines[1]["event"] == "stdlib line"
    assert lines[1]["request_id"] == "req-42"
