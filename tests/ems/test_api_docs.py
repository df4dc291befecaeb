"""The docs pages name no other host and tell the browser to load nothing from one."""

import re

import pytest

from ems.api_docs import SAME_ORIGIN_ONLY

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url, asset",
    [
        ("/api/docs/", "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"),
        ("/api/redoc/", "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js"),
    ],
)
def test_a_docs_page_loads_its_ui_from_this_app_only(client, url, asset):
    response = client.get(url)

    assert response.status_code == 200
    body = response.content.decode()
    assert asset in body
    assert re.findall(r"(?:src|href)=\"(https?:[^\"]*)\"", body) == []
    assert response["Content-Security-Policy"] == SAME_ORIGIN_ONLY
    assert "default-src 'self'" in SAME_ORIGIN_ONLY
