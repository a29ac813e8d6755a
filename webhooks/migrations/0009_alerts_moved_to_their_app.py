# The alert models moved to their own app (alerts/migrations/0001_initial.py). Their tables stay
# where they are, under their names: this app forgets the models, and drops nothing.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("webhooks", "0008_batch_reports"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name="alertevent",
                    name="requested_by",
                ),
                migrations.DeleteModel(
                    name="AlertSettings",
                ),
                migrations.DeleteModel(
                    name="AlertState",
                ),
                migrations.DeleteModel(
                    name="NotificationTarget",
                ),
                migrations.DeleteModel(
                    name="AlertEvent",
                ),
            ],
            database_operations=[],
        ),
    ]
