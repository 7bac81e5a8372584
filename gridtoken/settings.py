"""Django settings. Every value comes from ``config`` (validated at import); nothing is read here directly."""

from celery.schedules import crontab

import config
from config import certificates as certificates_config
from config import matching as matching_config
from gridtoken.api_tags import TAG_ORDER

CONFIG = config.load()
SERVICE = CONFIG.service
TOKENIZATION = CONFIG.tokenization
INGEST = CONFIG.ingest
VEE = CONFIG.vee
CHAIN = CONFIG.chain
MQTT = CONFIG.mqtt
RETENTION = CONFIG.retention  # readings' retention and archive (docs/RETENTION.md)
CERTIFICATES = certificates_config.load()  # the certificates app's own settings (config/certificates.py)
MATCHING = matching_config.load()  # the matching app's own settings (config/matching.py)

BASE_DIR = config.objects.BASE_DIR
SECRET_KEY = SERVICE.secret_key
DEBUG = SERVICE.debug
ALLOWED_HOSTS = SERVICE.allowed_hosts

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served from here: /api/docs/ works offline
    "channels",
    "localnet",
    "meters",
    "minting",
    "realtime",
    "protocols",
    "certificates",
    "matching",
    "ops",
]

MIDDLEWARE = [
    "gridtoken.middleware.RequestIdMiddleware",
    "ops.middleware.OpsMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, dashboard) answered before sessions, auth and CSRF do any work.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gridtoken.urls"
WSGI_APPLICATION = "gridtoken.wsgi.application"
ASGI_APPLICATION = "gridtoken.asgi.application"
# API paths have no trailing slash and a POST must never be redirected.
APPEND_SLASH = False

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

_database = dict(SERVICE.database)
if SERVICE.db_pool:
    # Under an ASGI server persistent connections leak one per request; a pool does not.
    _database["CONN_MAX_AGE"] = 0
    _database.setdefault("OPTIONS", {})["pool"] = {"min_size": 2, "max_size": 20, "timeout": 10}
else:
    _database["CONN_MAX_AGE"] = 60
    _database["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _database}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": SERVICE.redis_url,
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 defaults to a 5 s socket timeout and 100 connections per pool. channels-redis blocks in
        # BZPOPMIN for 5 s, so the two race and a consumer dies with "Timeout reading"; and 500 sockets
        # closing at once exhaust the pool ("Too many connections"). Both were seen in bench/ws.py.
        "CONFIG": {
            "hosts": [{"address": SERVICE.redis_url, "socket_timeout": 30, "max_connections": 2000}],
            "capacity": 5000,
            "expiry": 60,
        },
    }
}

CELERY_BROKER_URL = SERVICE.redis_url
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 90
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# The sweep makes minting independent of the broker keeping a message; the reconciler settles in-flight
# batches from the chain. A tick that waited longer than its interval is dropped (the next one comes).
CELERY_BEAT_SCHEDULE = {
    "minting-sweep": {
        "task": "minting.tasks.mint_due_readings",
        "schedule": float(TOKENIZATION.polling_interval_secs),
        "options": {"expires": float(TOKENIZATION.polling_interval_secs)},
    },
    "minting-reconcile": {
        "task": "minting.tasks.reconcile_batches",
        "schedule": 10.0,
        "options": {"expires": 10.0},
    },
    # Reads add the deltas not folded yet, so this only bounds how many they add (docs/ROLLUPS.md).
    "meters-rollups-fold": {
        "task": "meters.tasks.fold_rollups",
        "schedule": 5.0,
        "options": {"expires": 5.0},
    },
    # Months ahead, and a month of its own for readings that landed in the default partition (docs/PARTITIONS.md).
    "meters-partitions-ensure": {
        "task": "meters.tasks.ensure_partitions",
        "schedule": 3600.0,
        "options": {"expires": 3600.0},
    },
    # Retention (docs/RETENTION.md): a no-op without READINGS_RETENTION_DAYS; a month is archived once.
    "meters-readings-archive": {
        "task": "meters.tasks.archive_readings",
        "schedule": crontab(hour=3, minute=17),
        "options": {"expires": 3600.0},
    },
    "certificates-issue": {
        "task": "certificates.tasks.issue_certificates",
        "schedule": float(CERTIFICATES.issue_polling_secs),
        "options": {"expires": float(CERTIFICATES.issue_polling_secs)},
    },
    "matching-match": {
        "task": "matching.tasks.match_hours",
        "schedule": float(MATCHING.polling_secs),
        "options": {"expires": float(MATCHING.polling_secs)},
    },
}

AUTH_USER_MODEL = "meters.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The project's own assets (favicon, the admin's stylesheet and copy buttons): gridtoken is no installed app.
STATICFILES_DIRS = [BASE_DIR / "gridtoken" / "static"]
FORMAT_MODULE_PATH = ["gridtoken.formats"]  # ISO dates and times in the admin (gridtoken/formats/en/formats.py)
# WhiteNoise serves /static/ from every server the app runs under (uvicorn, gunicorn). With DEBUG (the demo,
# the tests) it reads the apps' static folders directly, so nothing needs collectstatic; without DEBUG it
# serves the compressed, content-hashed copies that collectstatic writes into STATIC_ROOT at image build.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CORS_ALLOWED_ORIGINS = SERVICE.cors_allowed_origins
CSRF_TRUSTED_ORIGINS = SERVICE.cors_allowed_origins
# Plain HTTP everywhere unless a TLS-terminating proxy in front says otherwise.
SECURE_SSL_REDIRECT = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "meters.authentication.ApiKeyAuthentication",
        "meters.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["meters.parsers.DecimalJSONParser"],  # every endpoint's one parser
    "EXCEPTION_HANDLER": "gridtoken.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "gridtoken.schema.TaggedAutoSchema",
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "GridToken API",
    "DESCRIPTION": (
        "Smart-meter readings in, Solana energy tokens out. A meter authenticates with its device API key "
        "(`X-API-Key`), a person with the token of `POST /api/auth/token` (`Authorization: Bearer <token>`). "
        'Every error answers `{"error": {"code", "message", "field"?}, "request_id"}` with a stable code. '
        "[Front door](/) · [dashboard](/dashboard/) · [health](/health)"
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "TAGS": TAG_ORDER,
    # Operations listed, each with its shapes when opened; the page's own list of every schema only made it longer.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "docExpansion": "list", "defaultModelsExpandDepth": -1},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "/favicon.ico",
    "REDOC_DIST": "SIDECAR",
    # Several components have a "status" field with its own choices; each set gets a name of its own.
    "ENUM_NAME_OVERRIDES": {
        "ReadingStatusEnum": "meters.models.MeterReading.Status",
        "MeterStatusEnum": "meters.models.Meter.Status",
        "DeadLetterStatusEnum": "meters.models.DeadLetter.Status",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "gridtoken.middleware.RequestIdLogFilter"}},
    "formatters": {"json": {"()": "gridtoken.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": SERVICE.log_level},
    "loggers": {
        # Django's own defaults attach a plain-text handler to "django" (and "django.server"); one format here.
        "django": {"handlers": ["console"], "level": SERVICE.log_level, "propagate": False},
        "django.server": {"handlers": ["console"], "level": SERVICE.log_level, "propagate": False},
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},  # one INFO line per JSON-RPC call otherwise
        "httpcore": {"level": "WARNING"},
        # uvicorn's own lines (handshakes with their query string) through the redacting JSON formatter.
        "uvicorn": {"handlers": ["console"], "level": SERVICE.log_level, "propagate": False},
        "uvicorn.access": {"handlers": ["console"], "level": SERVICE.log_level, "propagate": False},
    },
}
