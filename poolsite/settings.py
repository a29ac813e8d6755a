"""Settings come from the environment or `.env` (django-environ); `.env.example` documents each one."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if not env.bool("POOL_IGNORE_DOTENV", default=False):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env.str("SECRET_KEY")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    # The admin with the product's sections first (poolsite/admin_site.py).
    "poolsite.apps.PoolAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_tasks",
    "poolsite.apps.TasksDbConfig",  # django_tasks_db, named in the operator's language
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "poolsite.apps.AxesConfig",  # django-axes, named in the operator's language
    "accounts",
    "webhooks",
    "alerts",
    "apitokens",
]

# Background work runs in `manage.py db_worker` processes, queued in this same database.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The low-stock webhook skips the rest (what it skips and why it is safe: poolsite/middleware.py).
    "poolsite.middleware.WebhookFastPath",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it locks out repeated failed admin logins.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "poolsite.urls"

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
                "django.template.context_processors.i18n",
            ],
            # {% load stored_messages %}: stored texts in the reader's language (poolsite.messages).
            "libraries": {"stored_messages": "poolsite.message_tags"},
        },
    },
]

WSGI_APPLICATION = "poolsite.wsgi.application"

DATABASES = {
    "default": env.db_url_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A web process and a worker write side by side: WAL lets readers run during a write,
    # IMMEDIATE takes the write lock at BEGIN (no deadlocking lock upgrades), and the timeout
    # makes a writer wait for the lock instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;",
    }
    # A file, not :memory:, so tests that start worker subprocesses share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The console, and what the worker writes for a batch loaded without a browser, speak 简体中文
# unless the browser asks for English (Accept-Language, or the switch in the admin's header).
LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="zh-hans")
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Files served at the site's root by whitenoise: /favicon.ico, which browsers ask for on every
# page (without it the logs fill with 404 warnings).
WHITENOISE_ROOT = BASE_DIR / "poolsite" / "root"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Tokens and secret settings never reach a log, whatever a message or a traceback quotes.
    "filters": {"redact": {"()": "poolsite.log_filters.RedactSecrets"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # At DEBUG these log request URLs, and notification URLs carry bot tokens.
    "loggers": {"apprise": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}

# The error page (DEBUG=1) and error reports hide secret settings and every token, always.
DEFAULT_EXCEPTION_REPORTER_FILTER = "poolsite.debug.SecretSafeExceptionReporterFilter"

# --- The pool -------------------------------------------------------------------------------
# Comma-separated base64 keys of 32 bytes, newest first: the newest encrypts, every one decrypts.
POOL_ENCRYPTION_KEY = env.str("POOL_ENCRYPTION_KEY", default="")
# The manager counts an AT as expired about 8 hours early (docs/MANAGER.md).
POOL_MIN_AT_LIFETIME_HOURS = env.float("POOL_MIN_AT_LIFETIME_HOURS", default=9)
# Bigger files go through `manage.py load_accounts`, which streams.
POOL_UPLOAD_MAX_BYTES = env.int("POOL_UPLOAD_MAX_BYTES", default=20 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = POOL_UPLOAD_MAX_BYTES + 1024 * 1024

# --- The manager ----------------------------------------------------------------------------
MANAGER_BASE_URL = env.str("MANAGER_BASE_URL", default="")
MANAGER_API_KEY = env.str("MANAGER_API_KEY", default="")
MANAGER_CONNECT_TIMEOUT = env.float("MANAGER_CONNECT_TIMEOUT", default=5)
MANAGER_READ_TIMEOUT = env.float("MANAGER_READ_TIMEOUT", default=30)
# A run reserves accounts by the chunk, each under a lease of (connect + read timeout) per account
# plus a margin: what a killed worker holds, and for how long (webhooks/services/runs.py, lease_chunk).
REPLENISH_LEASE_CHUNK = env.int("REPLENISH_LEASE_CHUNK", default=10)
REPLENISH_LEASE_MARGIN_SECONDS = env.float("REPLENISH_LEASE_MARGIN_SECONDS", default=60)
# Following imported Teams in the manager: at most this many Team-info requests a second (0: no
# limit), and a round every this many hours from the reconcile loop `make run` starts (0: never).
FOLLOW_UP_RATE = env.float("FOLLOW_UP_RATE", default=5)
FOLLOW_UP_EVERY_HOURS = env.float("FOLLOW_UP_EVERY_HOURS", default=6)
# Settings whose values poolsite.text.redact removes, as it removes tokens, from any outside
# text the service stores or logs (a manager's answer, an exception, a log record).
REDACTED_SETTINGS = ["MANAGER_API_KEY"]


# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Token first: an anonymous request then gets 401 with WWW-Authenticate, not a bare 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apitokens.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    # DRF's parsers, but JSON nested too deep or holding a lone surrogate is a 400, not a 500.
    "DEFAULT_PARSER_CLASSES": [
        "poolsite.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Cursor pages by id: no COUNT over a million rows, stable under inserts.
    "DEFAULT_PAGINATION_CLASS": "poolsite.pagination.IdCursorPagination",
    "PAGE_SIZE": 100,
}
# API tokens (django-rest-knox): only a SHA-512 hash of each key is stored; the key is shown once.
# `Authorization: Token <key>` as before. No expiry unless one is given when the token is made.
REST_KNOX = {"TOKEN_TTL": None, "AUTH_HEADER_PREFIX": "Token"}
SPECTACULAR_SETTINGS = {
    "TITLE": "Spare-account pool API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed sidecar package: the docs page works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Admin login protection (django-axes) ---------------------------------------------------
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# Behind the TLS proxy the client's address comes from X-Forwarded-For (see poolsite/client_ip.py).
AXES_CLIENT_IP_CALLABLE = "poolsite.client_ip.client_ip"
AXES_VERBOSE = False  # no banner on every manage.py command

# --- Notifications (apprise URLs, comma-separated; more can be added in the admin) -----------
NOTIFY_URLS = env.list("NOTIFY_URLS", default=[])
# Notifications to loopback, private, link-local (cloud metadata), multicast or reserved addresses
# are refused unless this is set: e.g. a Bark server or a mail relay on the local network.
NOTIFY_ALLOW_PRIVATE_HOSTS = env.bool("NOTIFY_ALLOW_PRIVATE_HOSTS", default=False)
# The language notifications go out in: zh-hans or en (they have no browser to ask).
NOTIFY_LANGUAGE = env.str("NOTIFY_LANGUAGE", default="zh-hans")

# --- Monitoring ------------------------------------------------------------------------------
# GET /metrics for Prometheus answers only with `Authorization: Bearer <METRICS_TOKEN>`; empty: 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Deployment behind a proxy / TLS --------------------------------------------------------
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
# Proxies in front of this service that each append to X-Forwarded-For (only read behind the proxy).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=1)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=True)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# On behind TLS; off by default so `make run` on plain http://127.0.0.1 can log in.
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", default=False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
