"""The OpenAPI schema stays valid with the endorsement views in it."""

from django.core.management import call_command


def test_the_schema_is_valid_and_the_endorsement_views_raise_no_schema_warnings(db, capsys):
    call_command("spectacular", "--validate", "--file", "/dev/null")
    mine = [line for line in capsys.readouterr().err.splitlines() if "endorsements/" in line]
    # The platform's authenticators have no schema extension yet (an ems/ matter); nothing else.
    assert [line for line in mine if "could not resolve authenticator" not in line] == []


def test_the_schema_lists_the_endorsement_operations(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert set(paths["/api/v1/endorsements/"]) >= {"get", "post"}
    assert "post" in paths["/api/v1/endorsements/batch"]
    assert "get" in paths["/api/v1/endorsements/batch/{batch_id}"]
    assert "get" in paths["/api/v1/endorsements/batch/{batch_id}/errors"]
    assert "get" in paths["/api/v1/endorsements/{tracking_id}"]
