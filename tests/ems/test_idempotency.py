"""The Idempotency-Key mechanism, through a small view that writes an outbox row."""

import threading

import pytest
from django.db import connection, transaction
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from ems.errors import ValidationFailed
from ems.idempotency import idempotent
from ems.models import IdempotencyRecord, OutboxEvent
from ems.outbox import document_emit

pytestmark = [pytest.mark.urls(__name__)]

gate = threading.Event()
entered = threading.Event()


class _CreateView(APIView):
    @idempotent("test.create")
    def post(self, request):
        if request.data.get("fail"):
            raise ValidationFailed("refused")
        if request.data.get("wait"):
            entered.set()
            gate.wait(10)
        with transaction.atomic():
            row = document_emit(collection="c", document={"n": request.data.get("n")})
        return Response({"id": row.pk, "n": request.data.get("n")}, status=201)


urlpatterns = [path("api/create/", _CreateView.as_view()), path("", include("ems.urls"))]


def post(api, body, key="k-1"):
    return api.post("/api/create/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


@pytest.mark.django_db
def test_same_key_same_body_replays_the_first_response(api):
    first = post(api, {"n": 1})
    second = post(api, {"n": 1})
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert OutboxEvent.objects.count() == 1


@pytest.mark.django_db
def test_same_key_different_body_is_422_and_writes_nothing(api):
    post(api, {"n": 1})
    response = post(api, {"n": 2})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert OutboxEvent.objects.count() == 1


@pytest.mark.django_db
def test_keys_are_per_caller(api, employer):
    from rest_framework.test import APIClient

    from tests.factories import api_client_create

    other, secret = api_client_create(employer=employer, name="other")
    token = APIClient().post(
        "/api/v1/auth/token",
        {"grant_type": "client_credentials", "client_id": other.client_id, "client_secret": secret},
        format="json",
    )
    second_caller = APIClient()
    second_caller.credentials(HTTP_AUTHORIZATION=f"Bearer {token.json()['access_token']}")
    assert post(api, {"n": 1}).status_code == 201
    assert post(second_caller, {"n": 1}).status_code == 201
    assert OutboxEvent.objects.count() == 2


@pytest.mark.django_db
def test_a_refused_request_frees_the_key(api):
    refused = post(api, {"fail": True})
    assert refused.status_code == 422
    assert IdempotencyRecord.objects.count() == 0
    assert post(api, {"fail": True}).status_code == 422


@pytest.mark.django_db
def test_an_oversized_key_is_refused(api):
    response = post(api, {"n": 1}, key="k" * 256)
    assert response.status_code == 422
    assert OutboxEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_same_key_while_the_first_is_running_is_409(api):
    gate.clear()
    entered.clear()
    results = {}

    def first_request():
        results["first"] = post(api, {"wait": True, "n": 5})
        connection.close()

    worker = threading.Thread(target=first_request)
    worker.start()
    assert entered.wait(10)
    second = post(api, {"wait": True, "n": 5})
    gate.set()
    worker.join(10)
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "idempotency_in_flight"
    assert results["first"].status_code == 201
    assert OutboxEvent.objects.count() == 1
    assert post(api, {"wait": True, "n": 5}).json() == results["first"].json()
