"""Production overrides: secrets and hosts are required, HTTPS everywhere.

`SECRET_KEY`, `ALLOWED_HOSTS`, `DATABASE_URL` and `EMS_SECRET_KEYS` (the Fernet keys of
the secrets at rest, never derived from SECRET_KEY here) must be set; `manage.py check
--deploy` passes with no warnings once they are.
"""

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env, postgres_connections

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
EMS_SECRET_KEYS = env.list("EMS_SECRET_KEYS", default=[])
if not EMS_SECRET_KEYS:
    raise ImproperlyConfigured("Set EMS_SECRET_KEYS: the Fernet keys of the secrets stored encrypted.")
for _key in EMS_SECRET_KEYS:
    try:
        Fernet(_key.encode())
    except ValueError:
        raise ImproperlyConfigured("EMS_SECRET_KEYS holds a value that is not a Fernet key.") from None
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
DATABASES = {"default": env.db_url("DATABASE_URL")}
DATABASES["default"] = postgres_connections(DATABASES["default"], env)

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

WHITENOISE_USE_FINDERS = False
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
