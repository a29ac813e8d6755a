"""App configurations of the admin and of two third-party apps, named in the operator's language.

django-axes has no verbose name (its section read "Axes") and django-tasks-db's is plain English
("Tasks Database Backend"); both show in the admin's breadcrumbs and section pages.
"""

from axes.apps import AppConfig as AxesAppConfig
from django.contrib.admin.apps import AdminConfig
from django.utils.translation import gettext_lazy as _
from django_tasks_db.apps import TasksAppConfig


class PoolAdminConfig(AdminConfig):
    default_site = "poolsite.admin_site.PoolAdminSite"


class AxesConfig(AxesAppConfig):
    verbose_name = _("Login lock-outs")


class TasksDbConfig(TasksAppConfig):
    verbose_name = _("Background tasks")
