from django.contrib import admin
from django.urls import include, path

from webhooks.metrics import metrics

# admin.site is poolsite.admin_site.PoolAdminSite (poolsite/apps.py).
urlpatterns = [
    path("admin/", admin.site.urls),
    # set_language: the admin's language switch (English / 简体中文), kept in a cookie.
    path("i18n/", include("django.conf.urls.i18n")),
    path("webhooks/", include("webhooks.urls")),
    path("api/", include("poolsite.api_urls")),
    # Prometheus: 404 unless METRICS_TOKEN is set, then a bearer token (webhooks/metrics.py).
    path("metrics", metrics, name="metrics"),
]
