from django.urls import path

from bench.floor import app_views
from poolsite.urls import urlpatterns as project_urlpatterns

urlpatterns = [path("webhooks/bench-floor/", app_views.in_app_floor), *project_urlpatterns]
