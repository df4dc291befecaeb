"""ems/api_schema.py: the schema states what the JSON parser refuses (NUL in strings)."""

import pytest

from ems.api_schema import NUL_FREE

pytestmark = pytest.mark.django_db


def test_every_free_text_string_of_a_json_body_is_documented_nul_free(client):
    schemas = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["components"]["schemas"]

    for name in ("EndorsementInputRequest", "TokenRequestRequest", "TopUpRequestRequest"):
        free_text = {
            field: spec.get("pattern")
            for field, spec in schemas[name]["properties"].items()
            if spec.get("type") == "string" and "format" not in spec and "enum" not in spec
        }
        assert free_text and set(free_text.values()) == {NUL_FREE}, name
    # a formatted string keeps its format alone
    assert "pattern" not in schemas["EndorsementInputRequest"]["properties"]["effective_date"]
