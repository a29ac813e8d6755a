"""Re-seal stored notification URLs in the current ciphertext format, bound to their table and
column (AES-GCM associated data); see accounts 0008."""

from django.db import migrations


def bind_to_columns(apps, schema_editor):
    from accounts.services import encrypted_rows_reseal

    encrypted_rows_reseal(model=apps.get_model("webhooks", "NotificationTarget"))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0010_bind_ciphertexts"),
        ("webhooks", "0006_followed_teams"),
    ]

    operations = [
        migrations.RunPython(bind_to_columns, migrations.RunPython.noop),
    ]
