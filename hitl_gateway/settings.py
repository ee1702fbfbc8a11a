"""Settings, read from the environment (django-environ).

With no environment at all the gateway runs on an embedded default that needs no external
service: SQLite in ``var/`` and Kombu's filesystem broker, so ``make run`` works on a bare machine.
Production sets ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis or RabbitMQ), its
own ``DJANGO_SECRET_KEY`` (it refuses to start without), and gets https settings by default
(README, "Production settings").
"""

import ipaddress
from pathlib import Path

import environ
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from hitl_gateway.local_keys import local_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("HITL_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The embedded default (`make run`, `make demo`): a SQLite database, so one machine serving plain
# http on loopback. Anything else with DEBUG off is a production deployment: https and a real key.
EMBEDDED = env.str("DATABASE_URL", default="sqlite://").startswith("sqlite")
PRODUCTION = not DEBUG and not EMBEDDED

# --- Secret key: never the built-in one in production -------------------------------------------
INSECURE_SECRET_KEY = "insecure-local-only-key-change-me-in-production"
if "DJANGO_SECRET_KEY" in env:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY")
elif EMBEDDED:
    # Made once and kept in var/ (mode 0600): sessions survive restarts, no two machines share it.
    SECRET_KEY = local_key(VAR_DIR / "secret_key")
else:
    SECRET_KEY = INSECURE_SECRET_KEY
if not DEBUG and SECRET_KEY in ("", INSECURE_SECRET_KEY):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set (or is the built-in insecure default) and DEBUG is off: set it to a "
        'random value of 50+ characters, e.g. python -c "import secrets; print(secrets.token_urlsafe(50))". '
        "Only the embedded default (SQLite, no DATABASE_URL) makes and keeps a key of its own, in var/."
    )

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
# Where help desks and Botpress reach us: used to build the webhook URLs we print and install.
PUBLIC_BASE_URL = env.str("HITL_PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list(
    "DJANGO_CSRF_TRUSTED_ORIGINS", default=[PUBLIC_BASE_URL] if PUBLIC_BASE_URL.startswith("https://") else []
)

# --- https: on by default in production, off for the embedded default (plain http on loopback) ---
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=PRODUCTION)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=PRODUCTION)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=PRODUCTION)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=PRODUCTION)
# Behind a TLS-terminating proxy that sets it (and strips it from clients), e.g.
# "HTTP_X_FORWARDED_PROTO,https". Unset by default: trusting a header no proxy sets is a hole.
_proxy_ssl_header = env.list("DJANGO_SECURE_PROXY_SSL_HEADER", default=[])
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured("DJANGO_SECURE_PROXY_SSL_HEADER is HEADER,value, e.g. HTTP_X_FORWARDED_PROTO,https")
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_filters",
    "django_prometheus",
    "health_check",
    "rangefilter",
    "axes",
    "outbound",
    "sessions_app",
]

MIDDLEWARE = [
    # First: the help-desk webhooks take a short chain of their own (body limit, security), not
    # this whole stack (hitl_gateway/lean.py).
    "hitl_gateway.lean.LeanPathMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Before anything reads a body: 413 over HITL["MAX_REQUEST_BODY_BYTES"].
    "hitl_gateway.limits.RequestBodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

# Content-Security-Policy (django-csp) on every answer: the admin and the console load scripts,
# styles and images from this origin only (their CSS is in static files, no inline <style>), so
# an end user's URL or injected markup can make the operator's browser run or fetch nothing.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        # The nonce is for django-admin-rangefilter's inline filter script and style (it renders
        # request.csp_nonce); a page that renders none sends no nonce.
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    }
}

ROOT_URLCONF = "hitl_gateway.urls"
# Messages stay server-side: the admin shows a new API key once through them, never in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
WSGI_APPLICATION = "hitl_gateway.wsgi.application"

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
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'gateway.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process write while a worker reads; IMMEDIATE avoids lock-upgrade deadlocks.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    # Reuse connections across requests (a new PostgreSQL connection costs milliseconds per
    # request); health checks drop a connection the server has closed meanwhile. Ten minutes,
    # not one: every thread's connection ending at once (its age) was a wave of new server
    # processes with cold caches and statements to prepare again, about half of PostgreSQL's
    # extra CPU per relay in the flat-cost phase of ``make bench`` (DJANGO_CONN_MAX_AGE=60 vs 600).
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", 600)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if env.bool("HITL_DB_PREPARED_STATEMENTS", True):
        # Server-side binding, and psycopg prepares a statement run 5 times on a connection:
        # PostgreSQL then skips parsing and planning it (a fifth to a third of its CPU per relay,
        # make bench). Turn it off behind a transaction-mode pooler (PgBouncer).
        DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Secrets at rest (hitl_gateway.encryption) ----------------------------------------------
# Comma-separated Fernet keys: the first encrypts, all decrypt (``manage.py encryption_rotate``
# re-encrypts with the first). The embedded default keeps a generated key in var/; production
# (a non-SQLite DATABASE_URL with DEBUG off) must set them, else it refuses to start.
from hitl_gateway.encryption import encryption_keys_load  # noqa: E402

HITL_ENCRYPTION_KEYS = encryption_keys_load(
    configured=env.list("HITL_ENCRYPTION_KEYS", default=[]),
    production=PRODUCTION,
    key_file=VAR_DIR / "encryption.key",
)

# --- Admin log-in rate limiting (django-axes) -------------------------------------------------
# Axes first: it refuses a locked-out attempt before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_ENABLED = env.bool("HITL_LOGIN_RATE_LIMIT", default=True)
# A user name from one address is locked after this many failures, for this long; others are not
# locked out by someone guessing their password from elsewhere.
AXES_FAILURE_LIMIT = env.int("HITL_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("HITL_LOGIN_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Its "AXES: BEGIN version …" banner would open the output of every manage.py command.
AXES_VERBOSE = False
# The lock-out answer is an admin page saying for how long (``sessions_app.admin_lockout``).
AXES_LOCKOUT_CALLABLE = "sessions_app.admin_lockout.lockout_response"
# The address is REMOTE_ADDR: behind a proxy every client shares it, and the lock is then in
# effect per user name (still the point: no unlimited password guessing).

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Serve the admin's assets straight from the installed apps: no collectstatic step needed.
WHITENOISE_USE_FINDERS = True

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["hitl_gateway.limits.CheckedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "sessions_app.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "HITL gateway API",
    "DESCRIPTION": "Botpress HITL interface (v2.1.0) actions and channel, and help-desk webhooks.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "GET_LIB_DOC_EXCLUDES": "sessions_app.api.schema.doc_excludes",
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    # The embedded broker is a folder; it must exist before the first worker or web process.
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    # Kombu's folder transport, with each message written aside and renamed into the folder: a
    # worker never reads a message half-written (``hitl_gateway/filesystem_broker.py``).
    CELERY_BROKER_TRANSPORT = "hitl_gateway.filesystem_broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Above the longest countdown we ever schedule (DELIVERY_BACKOFF_MAX), so Redis never
    # redelivers a task that is merely waiting for its ETA.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="hitl_gateway")
# Ack after the task ran, so a killed worker's task is redelivered; deliveries are idempotent.
CELERY_TASK_ACKS_LATE = True
# A child killed by the OS (OOM, SIGKILL) also requeues its task instead of acking it.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process: a slow help desk never strands prefetched work.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Outbound calls time out in seconds; these only catch a task that is truly stuck.
CELERY_TASK_TIME_LIMIT = env.int("HITL_TASK_TIME_LIMIT", 120)
CELERY_TASK_SOFT_TIME_LIMIT = int(CELERY_TASK_TIME_LIMIT * 0.75)
# Delivery state lives in our outbox tables, not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    # The sweeper is what makes the outbox durable: a lost broker message is found again.
    "outbox-sweep": {"task": "sessions_app.tasks.outbox_sweep", "schedule": env.float("HITL_SWEEP_SECONDS", 10.0)},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Gateway behaviour ----------------------------------------------------------------------
from outbound.guard import allowances_parse  # noqa: E402

HITL = {
    # Zendesk documents no replay window; we accept signatures at most this old (or new).
    "WEBHOOK_REPLAY_WINDOW_SECONDS": env.int("HITL_WEBHOOK_REPLAY_WINDOW_SECONDS", 300),
    # After the signing secret changes, the previous one is still accepted this long.
    "WEBHOOK_SECRET_GRACE_SECONDS": env.int("HITL_WEBHOOK_SECRET_GRACE_SECONDS", 600),
    "HTTP_CONNECT_TIMEOUT": env.float("HITL_HTTP_CONNECT_TIMEOUT", 5.0),
    "HTTP_READ_TIMEOUT": env.float("HITL_HTTP_READ_TIMEOUT", 30.0),
    # Retry budget of one outbound delivery before it is declared dead (default: a day).
    "DELIVERY_RETRY_BUDGET_SECONDS": env.int("HITL_DELIVERY_RETRY_BUDGET_SECONDS", 86400),
    "DELIVERY_BACKOFF_BASE_SECONDS": env.float("HITL_DELIVERY_BACKOFF_BASE_SECONDS", 2.0),
    "DELIVERY_BACKOFF_MAX_SECONDS": env.float("HITL_DELIVERY_BACKOFF_MAX_SECONDS", 600.0),
    # Rate-limited rows (429 with Retry-After, channel pacing) back off at most this long.
    "DELIVERY_RATE_LIMIT_BACKOFF_MAX_SECONDS": env.float("HITL_DELIVERY_RATE_LIMIT_BACKOFF_MAX_SECONDS", 30.0),
    # How long a worker holds a delivery it executes: longer than a task can live (its hard time
    # limit), so only a dead worker's lease expires; then the delivery is retried with care.
    "DELIVERY_LEASE_SECONDS": env.int("HITL_DELIVERY_LEASE_SECONDS", CELERY_TASK_TIME_LIMIT + 30),
    # Lanes (sessions' deliveries, tickets' webhooks) one worker process runs at once, each on a
    # thread with its own database connection (services.relay): mind max_connections. Threads
    # mostly wait on the help desk and Botpress, so a slow remote needs them: with 4, make chaos's
    # p99 delay was 34-46 s, with 8 it was 19-23 s (README, "seventh step").
    "RELAY_THREADS": env.int("HITL_RELAY_THREADS", 8),
    # A pending delivery untouched for this long is re-enqueued by the sweeper.
    "DELIVERY_STALE_SECONDS": env.int("HITL_DELIVERY_STALE_SECONDS", 30),
    # Media relayed as Zendesk attachments: fetched only within these limits, else sent as a link.
    "MEDIA_MAX_BYTES": env.int("HITL_MEDIA_MAX_BYTES", 10 * 1024 * 1024),
    # Seconds for a whole media fetch, and the average rate (bytes/s) it must keep after the grace.
    "MEDIA_FETCH_TIMEOUT": env.float("HITL_MEDIA_FETCH_TIMEOUT", 15.0),
    "MEDIA_MIN_RATE": env.int("HITL_MEDIA_MIN_RATE", 10 * 1024),
    "MEDIA_RATE_GRACE_SECONDS": env.float("HITL_MEDIA_RATE_GRACE_SECONDS", 3.0),
    # All the media of one message (a bloc may carry several) within this many seconds.
    "MEDIA_FETCH_BUDGET_SECONDS": env.float("HITL_MEDIA_FETCH_BUDGET_SECONDS", 30.0),
    # Deliveries that fetch media run on this queue, served by a worker of its own (Procfile),
    # so a slow media host never delays other integrations' messages.
    "MEDIA_QUEUE": env.str("HITL_MEDIA_QUEUE", default=f"{CELERY_TASK_DEFAULT_QUEUE}.media"),
    # Ports allowed besides 80/443 for user-chosen URLs (media, hitl-api webhook), e.g. "8443".
    "OUTBOUND_EXTRA_PORTS": frozenset(env.list("HITL_OUTBOUND_EXTRA_PORTS", cast=int, default=[])),
    # Non-public addresses media may be fetched from: "127.0.0.1:8211, 10.1.0.0/16, [::1]:9000"
    # (an address or network, optionally one port). Empty (the default) allows none; only for
    # tests and the local demo, whose media live on loopback.
    "MEDIA_ALLOW_PRIVATE_ADDRESSES": allowances_parse(env.str("HITL_MEDIA_ALLOW_PRIVATE_ADDRESSES", default="")),
    # The same for the hitl-api webhook URL, which may then also be plain http (local development,
    # the demo, tests); otherwise it must be https to a public address.
    "BOTPRESS_ALLOW_INSECURE_URLS": allowances_parse(env.str("HITL_ALLOW_INSECURE_BOTPRESS_URLS", default="")),
    # Synchronous Botpress calls made while Botpress waits for our answer retry at most this long.
    "SYNC_RETRY_MAX_WAIT_SECONDS": env.float("HITL_SYNC_RETRY_MAX_WAIT_SECONDS", 10.0),
    # The doorbell sweep (desks whose webhooks only name the ticket, such as Freshdesk): how often
    # each integration's desk is asked which tickets changed (one listing call), how long a
    # change is left to its own webhook first, which sessions count (open, active this recently),
    # how many tickets one run re-reads and lists at most, and, for a desk that cannot list its
    # changes, how often a quiet ticket of an active session is re-read anyway.
    "DOORBELL_SWEEP_SECONDS": env.float("HITL_DOORBELL_SWEEP_SECONDS", 60.0),
    "DOORBELL_GRACE_SECONDS": env.float("HITL_DOORBELL_GRACE_SECONDS", 30.0),
    "DOORBELL_ACTIVE_SECONDS": env.float("HITL_DOORBELL_ACTIVE_SECONDS", 24 * 3600.0),
    "DOORBELL_REREAD_CAP": env.int("HITL_DOORBELL_REREAD_CAP", 50),
    "DOORBELL_LIST_LIMIT": env.int("HITL_DOORBELL_LIST_LIMIT", 300),
    "DOORBELL_IDLE_REREAD_SECONDS": env.float("HITL_DOORBELL_IDLE_REREAD_SECONDS", 600.0),
    # Any request body larger than this gets 413 before it is read (every endpoint, admin too).
    "MAX_REQUEST_BODY_BYTES": env.int("HITL_MAX_REQUEST_BODY_BYTES", 4 * 1024 * 1024),
    # A web process tells the workers "webhooks are ready" at most once per this many seconds
    # (the stored row is the hand-off; services.relay.ReadySignal). 0: once per webhook.
    "WEBHOOK_SIGNAL_SECONDS": env.float("HITL_WEBHOOK_SIGNAL_SECONDS", 0.02),
    # Likewise each process rings a queue's relay for new outbox rows at most once per this
    # many seconds, off the writer's thread (services.outbox.outbox_ring). 0: at each commit.
    "OUTBOX_RING_SECONDS": env.float("HITL_OUTBOX_RING_SECONDS", 0.02),
    # The ack path keeps each integration it verified against in memory this many seconds
    # (services.webhooks.AckIntegrations): a deactivation reaches it that late. 0: read each time.
    "ACK_INTEGRATION_SECONDS": env.float("HITL_ACK_INTEGRATION_SECONDS", 2.0),
}
# Django's own form-data limit agrees with ours, so a body under ours is never its 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = HITL["MAX_REQUEST_BODY_BYTES"]

# --- Health and metrics (README, "Health and metrics") --------------------------------------
# /metrics answers a client holding this bearer token, or one in these networks (REMOTE_ADDR).
HITL_METRICS_TOKEN = env.str("HITL_METRICS_TOKEN", default="")
HITL_METRICS_ALLOWED_NETWORKS = [
    ipaddress.ip_network(network, strict=False)
    for network in env.list("HITL_METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
    if network.strip()
]
HITL_HEALTH = {
    # Each Celery worker writes a heartbeat this often; /health/ fails when the newest is older.
    "WORKER_HEARTBEAT_SECONDS": env.float("HITL_WORKER_HEARTBEAT_SECONDS", 10.0),
    "WORKER_MAX_AGE_SECONDS": env.float("HITL_HEALTH_WORKER_MAX_AGE_SECONDS", 60.0),
    # The sweeper (scheduled by beat, run by a worker) last ran longer ago than this: beat is down.
    "SWEEPER_MAX_AGE_SECONDS": env.float(
        "HITL_HEALTH_SWEEPER_MAX_AGE_SECONDS", max(60.0, 6 * CELERY_BEAT_SCHEDULE["outbox-sweep"]["schedule"])
    ),
    # The oldest pending delivery waits longer than this: degraded (a side is down or slow).
    "PENDING_MAX_AGE_SECONDS": env.float("HITL_HEALTH_PENDING_MAX_AGE_SECONDS", 300.0),
    "BROKER_TIMEOUT_SECONDS": env.float("HITL_HEALTH_BROKER_TIMEOUT_SECONDS", 3.0),
}

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env.str("HITL_LOG_LEVEL", default="INFO")
LOG_JSON = env.bool("HITL_LOG_JSON", default=False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(message)s"}},
    # Every record is redacted on its way out: Django logs request paths, and the Botpress
    # endpoints' paths hold their URL secret (hitl_gateway.logging).
    "filters": {"redact": {"()": "hitl_gateway.logging.RedactingFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # urllib3 logs each request's path at DEBUG: a hitl-api webhook URL's path is the bot's
        # webhook id, a Zendesk attachment URL's holds its token.
        "urllib3": {"level": "INFO"},
        # Django's own handlers (console, mail_admins, django.server) carry no redaction: these
        # loggers give them up and reach the root handler instead.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        # A failing health check is in the probe's answer; its traceback on every probe buried the rest.
        "health_check": {"level": "ERROR"},
    },
}

from hitl_gateway.logging import configure_structlog  # noqa: E402

configure_structlog(json=LOG_JSON, level=LOG_LEVEL)
