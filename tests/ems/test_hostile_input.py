"""Hostile input earns a 4xx with a clear message and changes nothing, through every door.

One table of the inputs that once answered 500 (a RecursionError, a csv field limit,
PostgreSQL refusing NUL in text, an offset beyond bigint, a list where an object was
expected, a compressed body blamed on UTF-16), each tried through the API, the portal and
the admin as the person who uses that door.
"""

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from ems.models import IdempotencyRecord, OutboxEvent
from endorsements.models import EndorsementBatch, EndorsementRequest
from ledger.models import TopUp
from tests.factories import hr_user_create

pytestmark = pytest.mark.django_db

DEEP = 1_000


def deep_json(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int = DEEP) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def assert_refused(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.content[:300])
    if code is not None:
        assert response["Content-Type"].startswith("application/json")
        error = response.json()["error"]
        assert error["code"] == code, error
        assert error["message"]


def nothing_changed() -> None:
    assert EndorsementRequest.objects.count() == 0
    assert EndorsementBatch.objects.count() == 0
    assert TopUp.objects.count() == 0
    assert OutboxEvent.objects.count() == 0
    assert IdempotencyRecord.objects.filter(response_status__gte=500).count() == 0


API_BODIES = [
    ("/api/v1/endorsements/", deep_json(), "malformed_request"),
    ("/api/v1/endorsements/", deep_object(), "malformed_request"),
    ("/api/v1/ledger/topup", deep_object(), "malformed_request"),
    ("/api/v1/endorsements/", '{"type": "ADD", "member": {"first_name": "A\\u0000B"}}', "malformed_request"),
    ("/api/v1/endorsements/", "[1, 2, 3]", "endorsement_invalid"),
    ("/api/v1/ledger/topup", '[{"amount": 100}]', "validation_failed"),
    ("/api/v1/ledger/topup", '"just a string"', "validation_failed"),
]


@pytest.mark.parametrize(("path", "body", "code"), API_BODIES)
def test_hostile_json_bodies_are_refused_with_the_envelope(api, path, body, code):
    response = api.post(path, data=body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert_refused(response, 400 if code == "malformed_request" else 422, code)
    nothing_changed()


def test_a_deep_json_batch_file_is_refused(api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("deep.json", deep_json().encode(), content_type="application/json")
    response = api.post("/api/v1/endorsements/batch", {"file": upload}, format="multipart")
    assert response.status_code in (202, 400, 422), response.content[:300]
    batch = EndorsementBatch.objects.first()
    if response.status_code == 202:
        assert batch.state == EndorsementBatch.State.FAILED
        assert batch.failure_code
    assert EndorsementRequest.objects.count() == 0


def test_a_csv_with_one_huge_field_is_refused_clearly(api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    header = "action,employee_code,relation,first_name\n"
    content = (header + "ADD,E1,self," + "x" * (10 * 1024 * 1024) + "\n").encode()
    upload = SimpleUploadedFile("huge.csv", content, content_type="text/csv")
    response = api.post("/api/v1/endorsements/batch", {"file": upload}, format="multipart")
    assert response.status_code in (202, 413, 422), response.content[:300]
    assert EndorsementRequest.objects.count() == 0
    if response.status_code == 202:
        batch = EndorsementBatch.objects.get()
        assert batch.state == EndorsementBatch.State.FAILED
        assert "field" in batch.failure_reason.lower()


NUL_API_PATHS = [
    "/api/v1/endorsements/END-%00",
    "/api/v1/endorsements/?state=%00",
    "/api/v1/endorsements/batch/1%00",
    "/api/v1/ledger/history?kind=%00",
]


@pytest.mark.parametrize("path", NUL_API_PATHS)
def test_a_nul_byte_in_an_api_path_or_query_is_a_400(api, path):
    assert_refused(api.get(path), 400, "malformed_request")


PAGED_LISTS = ["/api/v1/endorsements/", "/api/v1/ledger/history"]


@pytest.mark.parametrize("path", PAGED_LISTS)
@pytest.mark.parametrize("page", [str(2**63), str(10**30), "99999999999"])
def test_a_page_beyond_any_row_is_a_clear_422(api, path, page):
    assert_refused(api.get(path, {"page": page}), 422, "validation_failed")


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_a_compressed_body_is_refused_naming_the_encoding(api, encoding):
    response = api.post(
        "/api/v1/endorsements/",
        data=b"\x1f\x8b\x08\x00",
        content_type="application/json",
        HTTP_CONTENT_ENCODING=encoding,
    )
    assert_refused(response, 415, "unsupported_media_type")
    assert encoding in response.json()["error"]["message"]
    nothing_changed()


def test_an_undeclared_method_answers_405_with_allow(api):
    response = api.delete("/api/v1/ledger/balance")
    assert_refused(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


# --- the portal and the admin -----------------------------------------------------------


@pytest.fixture
def hr(client, employer):
    client.force_login(hr_user_create(employer=employer))
    return client


@pytest.mark.parametrize(
    "path",
    ["/portal/endorsements/END-%00/", "/portal/endorsements/?state=%00", "/portal/batches/1/?x=%00"],
)
def test_a_nul_byte_through_the_portal_is_a_400(hr, path):
    response = hr.get(path)
    assert response.status_code == 400, response.content[:200]
    assert b"Traceback" not in response.content


@pytest.fixture
def ops(client):
    user = get_user_model().objects.create_user("ops-hostile", password="x", is_staff=True)
    user.groups.add(Group.objects.get(name="ops_operator"))
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "path",
    [
        "/admin/endorsements/endorsementrequest/?state__exact=%00",
        "/admin/endorsements/endorsementrequest/?q=%00",
        "/admin/ledger/topup/?state__exact=%00",
        "/admin/endorsements/endorsementrequest/END%00/change/",
    ],
)
def test_a_nul_byte_through_the_admin_is_a_400(ops, path):
    response = ops.get(path)
    assert response.status_code == 400, response.content[:200]


def test_hostile_portal_upload_with_a_huge_field_changes_nothing(hr):
    from django.core.files.uploadedfile import SimpleUploadedFile

    content = ("action,employee_code\nADD," + "y" * (10 * 1024 * 1024) + "\n").encode()
    upload = SimpleUploadedFile("huge.csv", content, content_type="text/csv")
    response = hr.post("/portal/", {"file": upload})
    assert response.status_code in (200, 302, 400, 413, 422), response.status_code
    assert EndorsementRequest.objects.count() == 0


def test_json_depth_limit_is_generous_for_real_bodies(api):
    body = json.dumps({"type": "ADD", "member": {"a": {"b": {"c": [1, [2, [3]]]}}}})
    response = api.post("/api/v1/endorsements/", data=body, content_type="application/json")
    # past the parser: refused by the endorsement's own rules, not as malformed
    assert response.status_code == 422, response.content[:300]
    assert response.json()["error"]["code"] == "endorsement_invalid"
