"""Re-seal existing tokens and staged uploads in the current ciphertext format, which binds each
value to its table and column (AES-GCM associated data). Values still in the old format keep
opening until then; rows no configured key opens are left as they are."""

from django.db import migrations


def bind_to_columns(apps, schema_editor):
    from accounts.services import encrypted_rows_reseal

    for name in ("Account", "AccountBatch"):
        encrypted_rows_reseal(model=apps.get_model("accounts", name))


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0009_held_undecryptable"),
    ]

    operations = [
        # Backwards: nothing to undo, the old code cannot read the new format anyway.
        migrations.RunPython(bind_to_columns, migrations.RunPython.noop),
    ]
