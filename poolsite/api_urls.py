"""/api/: the REST API (DRF), its OpenAPI schema and a docs page served from installed assets.

Everything here is for staff only, the schema and docs included: they map what staff can do.
"""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAdminUser
from rest_framework.routers import SimpleRouter

from accounts.api import AccountViewSet
from webhooks.api import AttemptViewSet, EventViewSet, RunViewSet, StatsView

router = SimpleRouter()
router.register("accounts", AccountViewSet, basename="api-account")
router.register("events", EventViewSet, basename="api-event")
router.register("runs", RunViewSet, basename="api-run")
router.register("attempts", AttemptViewSet, basename="api-attempt")

urlpatterns = [
    path("stats/", StatsView.as_view(), name="api-stats"),
    *router.urls,
    path(
        "schema/", SpectacularAPIView.as_view(permission_classes=[IsAdminUser]), name="api-schema"
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[IsAdminUser]),
        name="api-docs",
    ),
]
