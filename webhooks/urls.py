from django.conf import settings
from django.urls import path, re_path

from webhooks import views

urlpatterns = [
    # The trailing slash is optional: the manager posts to whatever URL staff typed in.
    re_path(r"^low-stock/?$", views.low_stock, name="low_stock"),
]

if settings.BENCH_ENDPOINTS:
    # `make bench-webhook` only: never routed in a normal deployment.
    urlpatterns.append(path("bench-floor/", views.bench_floor, name="bench_floor"))
