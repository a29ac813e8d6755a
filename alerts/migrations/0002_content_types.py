# Permissions are keyed by content type, and a content type by app label: left alone, the moved
# models' content types would stay under "webhooks" (stale), and `migrate` would make new ones
# under "alerts" with new permissions, so every staff grant on alert settings, destinations,
# states and alerts would silently stop applying. This moves the existing rows to "alerts"
# instead, which keeps the permissions, the grants and the admin log pointing at them.

from django.conf import settings
from django.db import migrations

MODELS = ("alertsettings", "notificationtarget", "alertstate", "alertevent")


def _move(apps, schema_editor, *, source: str, target: str) -> None:
    db = schema_editor.connection.alias
    content_types = apps.get_model("contenttypes", "ContentType").objects.db_manager(db)
    permissions = apps.get_model("auth", "Permission").objects.db_manager(db)
    user_grants = apps.get_model(settings.AUTH_USER_MODEL).user_permissions.through.objects
    group_grants = apps.get_model("auth", "Group").permissions.through.objects
    log_entries = apps.get_model("admin", "LogEntry").objects.db_manager(db)
    for model in MODELS:
        old = content_types.filter(app_label=source, model=model).first()
        if old is None:
            continue  # a new database: `migrate` makes them under the new label
        new = content_types.filter(app_label=target, model=model).first()
        if new is None:
            content_types.filter(pk=old.pk).update(app_label=target)
            continue
        # Both exist: `migrate` made the target's after an earlier move was undone. The grants of
        # each old permission go to the new one of the same codename, then the old rows go.
        for permission in permissions.filter(content_type=old):
            twin = permissions.filter(content_type=new, codename=permission.codename).first()
            if twin is None:
                permissions.filter(pk=permission.pk).update(content_type=new)
                continue
            for grants, owner in ((user_grants, "user_id"), (group_grants, "group_id")):
                held = grants.using(db).filter(permission_id=twin.pk).values(owner)
                grants.using(db).filter(permission_id=permission.pk).exclude(
                    **{f"{owner}__in": held}
                ).update(permission_id=twin.pk)
        log_entries.filter(content_type=old).update(content_type=new)
        content_types.filter(pk=old.pk).delete()


def forwards(apps, schema_editor):
    _move(apps, schema_editor, source="webhooks", target="alerts")


def backwards(apps, schema_editor):
    _move(apps, schema_editor, source="alerts", target="webhooks")


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0001_initial"),
        ("admin", "0003_logentry_add_action_flag_choices"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
