"""The home page at `/`: names the doors for whoever opens the URL the README prints.

It is also where the admin's "View site" leads. No login and no data: links only.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

DOORS = (
    ("HR portal", "portal:upload", "HR users: upload member changes, follow endorsements, see the EA."),
    ("Operations admin", "admin:index", "Operations and finance: the pipeline, held items, top-ups, audit."),
    ("API documentation", "api-docs", "Integrators: the API for an employer's HRIS (Swagger UI and ReDoc)."),
    ("Health", "healthz", "Is this process up? (/readyz checks each dependency.)"),
)


def home(request: HttpRequest) -> HttpResponse:
    doors = [{"name": name, "url": reverse(route), "about": about} for name, route, about in DOORS]
    return render(request, "ems/home.html", {"doors": doors})
