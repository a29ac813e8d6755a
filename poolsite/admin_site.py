"""The admin site: the product's sections first, everything else under one section, System, last.

Django sorts the admin's sections by their translated names: in 简体中文 the third-party ones
(认证和授权, Axes, Tasks Database Backend, API tokens) sort above 账号池 and 补号, which dropped
to the bottom of the home page and the side menu. Here the product's apps come first, in a fixed
order, and every other app's models are listed under 系统 / System, last. Each model's pages keep
their URLs (by app label); only the home page and the side menu group them differently.
"""

from django.contrib import admin
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

SYSTEM_LABEL = "system"
# The product's sections, in this order. "alerts" is the alerts app once it has its own.
PRODUCT_APPS = ("accounts", "webhooks", "alerts")
# Within System: API tokens, users and groups, login lock-outs, background tasks; others after.
SYSTEM_APPS = ("apitokens", "auth", "axes", "django_tasks_database")


def _order(labels: tuple[str, ...], app: dict) -> tuple[int, str]:
    label = app["app_label"]
    return (labels.index(label) if label in labels else len(labels), str(app["name"]).lower())


class PoolAdminSite(admin.AdminSite):
    site_header = _("Spare-account pool")
    site_title = _("Spare-account pool")
    index_title = _("Pool administration")
    site_url = None  # there is no public site to link to

    def get_app_list(self, request, app_label=None):
        if app_label == SYSTEM_LABEL:
            return self._system(request)
        app_list = super().get_app_list(request, app_label)
        if app_label is not None:
            return app_list
        ours = sorted(
            (app for app in app_list if app["app_label"] in PRODUCT_APPS),
            key=lambda app: _order(PRODUCT_APPS, app),
        )
        system = self._system(request, app_list=app_list)
        return ours + system

    def _system(self, request, app_list=None) -> list[dict]:
        """The System section: every registered model of the apps that are not the product's."""
        if app_list is None:
            app_list = super().get_app_list(request)
        others = sorted(
            (app for app in app_list if app["app_label"] not in PRODUCT_APPS),
            key=lambda app: _order(SYSTEM_APPS, app),
        )
        models = [model for app in others for model in app["models"]]
        if not models:
            return []
        return [
            {
                "name": _("System"),
                "app_label": SYSTEM_LABEL,
                "app_url": reverse("admin:system", current_app=self.name),
                "has_module_perms": True,
                "models": models,
            }
        ]

    def get_urls(self):
        return [
            path(SYSTEM_LABEL + "/", self.admin_view(self.system_index), name=SYSTEM_LABEL),
            *super().get_urls(),
        ]

    def system_index(self, request, extra_context=None):
        """The System section's own page, as Django's page of one app."""
        app_list = self._system(request)
        if not app_list:
            raise Http404("The requested admin page does not exist.")
        context = {
            **self.each_context(request),
            "title": _("%(app)s administration") % {"app": _("System")},
            "subtitle": None,
            "app_list": app_list,
            "app_label": SYSTEM_LABEL,
            **(extra_context or {}),
        }
        request.current_app = self.name
        return TemplateResponse(request, "admin/app_index.html", context)
