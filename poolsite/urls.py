from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _

from webhooks.metrics import metrics

admin.site.site_header = _("Spare-account pool")
admin.site.site_title = _("Spare-account pool")
admin.site.index_title = _("Pool administration")
admin.site.site_url = None  # there is no public site to link to

urlpatterns = [
    path("admin/", admin.site.urls),
    # set_language: the admin's language switch (English / 简体中文), kept in a cookie.
    path("i18n/", include("django.conf.urls.i18n")),
    path("webhooks/", include("webhooks.urls")),
    path("api/", include("poolsite.api_urls")),
    # Prometheus: 404 unless METRICS_TOKEN is set, then a bearer token (webhooks/metrics.py).
    path("metrics", metrics, name="metrics"),
]
