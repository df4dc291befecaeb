"""Page-number pagination with a bounded page size and an RFC 8288 `Link` header.

Body: `{"items", "page", "page_size", "total", "links": {"first", "prev", "next", "last"}}`.
"""

import math

from django.conf import settings
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.utils.urls import replace_query_param


class NoBlankQuerySerializer(Serializer):
    """A list's query filters: a filter named with no value (`?type=`) is refused, not ignored.

    DRF reads an empty query value of an optional field as "not given", so `?state=` would
    list everything while the schema (and the caller) mean a state."""

    def validate(self, attrs):
        blank = {
            name: [f"{name} must not be empty."] for name in self.fields if self.initial_data.get(name) == ""
        }
        if blank:
            raise ValidationError(blank)
        return super().validate(attrs)


# The highest page a list accepts: an offset beyond PostgreSQL's bigint is an error there.
MAX_PAGE = 2**31 - 1


class EmsPagination(BasePagination):
    def _positive_int(self, request, name: str, default: int, maximum: int | None = None) -> int:
        raw = request.query_params.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ValidationError({name: [f"{name} must be a positive integer."]}) from None
        if value < 1:
            raise ValidationError({name: [f"{name} must be a positive integer."]})
        if maximum is not None and value > maximum:
            raise ValidationError({name: [f"{name} must be at most {maximum}."]})
        return value

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.page_size = min(
            self._positive_int(request, "page_size", settings.API_PAGE_SIZE),
            settings.API_MAX_PAGE_SIZE,
        )
        self.page = self._positive_int(request, "page", 1, maximum=MAX_PAGE)
        self.total = queryset.count()
        self.last = max(1, math.ceil(self.total / self.page_size))
        start = (self.page - 1) * self.page_size
        return list(queryset[start : start + self.page_size])

    def _url(self, page: int) -> str:
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, "page", page)
        return replace_query_param(url, "page_size", self.page_size)

    def links(self) -> dict:
        return {
            "first": self._url(1),
            "prev": self._url(self.page - 1) if 1 < self.page <= self.last + 1 else None,
            "next": self._url(self.page + 1) if self.page < self.last else None,
            "last": self._url(self.last),
        }

    def get_paginated_response(self, data):
        links = self.links()
        header = ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items() if url)
        body = {
            "items": data,
            "page": self.page,
            "page_size": self.page_size,
            "total": self.total,
            "links": links,
        }
        return Response(body, headers={"Link": header})

    def get_schema_operation_parameters(self, view):
        return page_parameters()

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["items", "page", "page_size", "total", "links"],
            "properties": {
                "items": schema,
                "page": {"type": "integer"},
                "page_size": {"type": "integer"},
                "total": {"type": "integer"},
                "links": {
                    "type": "object",
                    "properties": {
                        rel: {"type": "string", "nullable": True, "format": "uri"}
                        for rel in ("first", "prev", "next", "last")
                    },
                },
            },
        }


def page_query_parameters() -> list:
    """`page_parameters()` as drf-spectacular parameters, for a list view that paginates itself."""
    from drf_spectacular.utils import OpenApiParameter

    return [OpenApiParameter(p["name"], p["schema"], description=p["description"]) for p in page_parameters()]


def page_response(component: str) -> dict:
    """The schema of one page of `component` (a serializer's component name): the envelope."""
    return EmsPagination().get_paginated_response_schema(
        {"type": "array", "items": {"$ref": f"#/components/schemas/{component}"}}
    )


def page_parameters() -> list[dict]:
    """`page` and `page_size` as the schema states them (the bounds the list enforces)."""
    return [
        {
            "name": "page",
            "in": "query",
            "required": False,
            "description": "1-based page number",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
        },
        {
            "name": "page_size",
            "in": "query",
            "required": False,
            "description": f"rows per page (at most {settings.API_MAX_PAGE_SIZE}; larger values are capped)",
            "schema": {"type": "integer", "minimum": 1},
        },
    ]
