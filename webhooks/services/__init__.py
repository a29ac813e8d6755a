"""Replenishment services, now a package; split by subject in the next commit."""

from webhooks.services.runs import *  # noqa: F403
