from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from ems import api_docs, health, home
from ems.api import TokenView

api_v1 = [
    path("auth/token", TokenView.as_view(), name="auth-token"),
    path("endorsements/", include("endorsements.urls")),
    path("ledger/", include("ledger.urls")),
    path("webhooks/", include("insurers.urls")),
]

urlpatterns = [
    path("", home.home, name="home"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path(
        "api/schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="schema",
    ),
    path("api/docs/", api_docs.SwaggerDocsView.as_view(), name="api-docs"),
    path("api/redoc/", api_docs.RedocDocsView.as_view(), name="api-redoc"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("", include("django_prometheus.urls")),
    path("portal/", include("endorsements.portal_urls")),
]

admin.site.site_header = "EMS operations"
admin.site.site_title = "EMS"
admin.site.site_url = "/"  # "View site": the home page naming the doors
admin.site.index_title = "Endorsements, ledger and insurers"
# The lists take the width: with the app sidebar open, a laptop's 1366 px left a list about
# 700 px beside its filters. Breadcrumbs and the index still lead everywhere.
admin.site.enable_nav_sidebar = False
