"""The alert models moved from the webhooks app to alerts, keeping their tables: on a database
that had them nothing is dropped, every row reads through the new models (the encrypted URLs
too: they are bound to their table), and staff keep their permissions on them and the admin log
its links (the content types move with the models)."""

import pytest
from django.apps import apps as global_apps
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.management import create_contenttypes
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from alerts.models import AlertEvent, AlertSettings, AlertState, NotificationTarget

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("webhooks", "0008_batch_reports"), ("alerts", None)]
MODELS = ("alertsettings", "notificationtarget", "alertstate", "alertevent")
URL = "tgram://123456:bot-token/-1001"


def content_types(app_label: str) -> dict[str, int]:
    return dict(
        ContentType.objects.filter(app_label=app_label, model__in=MODELS).values_list("model", "pk")
    )


def migrate_back() -> MigrationExecutor:
    """The database as it was before the move, with its historical models."""
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    executor.loader.build_graph()
    return executor


def migrate_forward(executor: MigrationExecutor) -> None:
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()


def old_rows(executor: MigrationExecutor, django_user_model) -> dict:
    """Rows of every alert model, written through the webhooks app's historical models, and a staff
    member and a group granted permissions on them, with an admin log entry."""
    old = executor.loader.project_state(BEFORE[0]).apps
    user = django_user_model.objects.create_user("ops", password="x", is_staff=True)
    settings_row = old.get_model("webhooks", "AlertSettings").objects.create(pk=1, stock_below=7)
    target = old.get_model("webhooks", "NotificationTarget").objects.create(
        label="ops chat", url=URL, masked_url="tgram://…1001"
    )
    old.get_model("webhooks", "AlertState").objects.create(
        condition="low_stock", active=True, since=timezone.now()
    )
    event = old.get_model("webhooks", "AlertEvent").objects.create(
        kind="test", delivery="sent", title="test", requested_by_id=user.pk
    )
    webhooks_types = content_types("webhooks")
    user.user_permissions.add(
        Permission.objects.get(
            content_type_id=webhooks_types["alertsettings"], codename="change_alertsettings"
        ),
        Permission.objects.get(
            content_type_id=webhooks_types["alertsettings"], codename="view_alertsettings"
        ),
    )
    group = Group.objects.create(name="on call")
    group.permissions.add(
        Permission.objects.get(
            content_type_id=webhooks_types["alertevent"], codename="view_alertevent"
        )
    )
    user.groups.add(group)
    LogEntry.objects.create(
        user=user,
        content_type_id=webhooks_types["alertsettings"],
        object_id="1",
        object_repr="Alert settings",
        action_flag=CHANGE,
    )
    return {"user": user, "settings": settings_row, "target": target, "event": event}


def assert_moved_intact(rows: dict, django_user_model, client) -> None:
    tables = set(connection.introspection.table_names())
    assert {f"webhooks_{model}" for model in MODELS} <= tables
    assert not {name for name in tables if name.startswith("alerts_")}

    assert AlertSettings.objects.get().stock_below == 7
    target = NotificationTarget.objects.get()
    assert (target.pk, target.label, target.url) == (rows["target"].pk, "ops chat", URL)
    assert AlertState.objects.get().active
    assert AlertEvent.objects.get().requested_by_id == rows["user"].pk

    assert content_types("webhooks") == {}
    assert set(content_types("alerts")) == set(MODELS)
    user = django_user_model.objects.get(pk=rows["user"].pk)  # no cached permissions
    assert user.has_perm("alerts.change_alertsettings")
    assert user.has_perm("alerts.view_alertevent")  # through the group
    assert not user.has_perm("alerts.change_notificationtarget")
    entry = LogEntry.objects.get()
    assert entry.content_type == ContentType.objects.get_for_model(AlertSettings)
    assert entry.get_edited_object().pk == 1

    client.force_login(user)
    change = client.get(reverse("admin:alerts_alertsettings_change", args=[1]))
    assert change.status_code == 200 and 'name="stock_below"' in change.content.decode()


def test_the_move_keeps_every_row_and_the_permissions_on_them(django_user_model, client):
    before = content_types("alerts")
    executor = migrate_back()
    # Undoing the move hands the content types back to webhooks, as the database had them.
    assert content_types("webhooks") == before and content_types("alerts") == {}
    rows = old_rows(executor, django_user_model)

    migrate_forward(executor)

    assert content_types("alerts") == before  # the same rows, relabelled: same permissions
    assert_moved_intact(rows, django_user_model, client)


def test_the_move_merges_content_types_made_meanwhile(django_user_model, client):
    """After the move was undone, `migrate` made alerts' content types and permissions again
    (post_migrate): moving forward keeps one of each, with the grants of the old ones."""
    executor = migrate_back()
    rows = old_rows(executor, django_user_model)
    ContentType.objects.clear_cache()
    create_contenttypes(global_apps.get_app_config("alerts"), verbosity=0)
    create_permissions(global_apps.get_app_config("alerts"), verbosity=0)
    made_meanwhile = content_types("alerts")
    assert set(made_meanwhile) == set(MODELS)

    migrate_forward(executor)

    assert content_types("alerts") == made_meanwhile
    assert Permission.objects.filter(codename="change_alertsettings").count() == 1
    assert_moved_intact(rows, django_user_model, client)
