"""The API's documentation pages, served whole by EMS so they work on a closed network.

Swagger UI (`/api/docs/`) and ReDoc (`/api/redoc/`) load their scripts and styles from
drf-spectacular-sidecar's static files (settings: `SPECTACULAR_SETTINGS`, "SIDECAR"), and
ReDoc's page is ours without its web fonts. Both pages are sent with a Content Security
Policy that lets them load nothing from another origin: ReDoc's bundle still names a logo
on a public host in its footer, which the browser then never requests.
"""

from django.utils.decorators import method_decorator
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

SAME_ORIGIN_ONLY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",  # each page starts its UI in an inline script
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
    )
)


def same_origin_only(view):
    def wrapped(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response["Content-Security-Policy"] = SAME_ORIGIN_ONLY
        return response

    return wrapped


@method_decorator(same_origin_only, name="dispatch")
class SwaggerDocsView(SpectacularSwaggerView):
    authentication_classes: list = []
    permission_classes: list = []
    url_name = "schema"


@method_decorator(same_origin_only, name="dispatch")
class RedocDocsView(SpectacularRedocView):
    authentication_classes: list = []
    permission_classes: list = []
    url_name = "schema"
    template_name = "ems/redoc.html"
