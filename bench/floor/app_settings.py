"""This project's settings, whole middleware stack included, with the in-app floor routed."""

from poolsite.settings import *  # noqa: F403

ROOT_URLCONF = "bench.floor.app_urls"
