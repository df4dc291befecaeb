"""EmsPagination through a real list endpoint-shaped view on OutboxEvent rows."""

import pytest
from django.db import transaction
from django.urls import path
from rest_framework import serializers
from rest_framework.generics import ListAPIView

from ems.models import OutboxEvent
from ems.outbox import document_emit

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


class _Serializer(serializers.ModelSerializer):
    class Meta:
        model = OutboxEvent
        fields = ["id"]


class _View(ListAPIView):
    authentication_classes: list = []
    permission_classes: list = []
    serializer_class = _Serializer
    queryset = OutboxEvent.objects.order_by("id")


urlpatterns = [path("api/items/", _View.as_view())]


@pytest.fixture
def rows():
    with transaction.atomic():
        return [document_emit(collection="c", document={"n": n}).pk for n in range(7)]


def test_pages_carry_items_totals_and_links(client, rows, settings):
    response = client.get("/api/items/?page=2&page_size=3")
    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body["items"]] == rows[3:6]
    assert (body["page"], body["page_size"], body["total"]) == (2, 3, 7)
    assert body["links"]["next"].endswith("page=3&page_size=3")
    assert body["links"]["prev"].endswith("page=1&page_size=3")
    assert body["links"]["last"].endswith("page=3&page_size=3")
    link = response["Link"]
    assert '; rel="next"' in link and '; rel="prev"' in link and '; rel="first"' in link


def test_page_size_is_bounded(client, rows, settings):
    settings.API_MAX_PAGE_SIZE = 5
    body = client.get("/api/items/?page_size=1000").json()
    assert body["page_size"] == 5
    assert len(body["items"]) == 5
    assert body["links"]["prev"] is None


@pytest.mark.parametrize("query", ["page=0", "page=abc", "page_size=-1"])
def test_bad_paging_parameters_are_422(client, rows, query):
    response = client.get(f"/api/items/?{query}")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_failed"


def test_a_page_past_the_end_is_empty_with_no_next(client, rows):
    body = client.get("/api/items/?page=9&page_size=3").json()
    assert body["items"] == []
    assert body["links"]["next"] is None
