"""Carry the tokens of DRF's authtoken (keys stored in clear) over to knox (a hash of each key),
then drop DRF's table, so every key in use keeps working and none is left readable.

DRF's key is a 40-character hex string: knox finds it by its first 15 characters and checks the
SHA-512 of the whole, as it does for its own keys.
"""

from django.db import migrations

DRF_TABLE = "authtoken_token"


def carry_over(apps, schema_editor):
    from knox.crypto import hash_token
    from knox.settings import CONSTANTS

    connection = schema_editor.connection
    if DRF_TABLE not in connection.introspection.table_names():
        return
    AuthToken = apps.get_model("knox", "AuthToken")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {connection.ops.quote_name('key')}, user_id FROM {DRF_TABLE}")
        rows = cursor.fetchall()
    AuthToken.objects.bulk_create(
        [
            AuthToken(
                digest=hash_token(key),
                token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH],
                user_id=user_id,
                expiry=None,
            )
            for key, user_id in rows
        ]
    )
    schema_editor.execute(f"DROP TABLE {DRF_TABLE}")


class Migration(migrations.Migration):
    dependencies = [
        ("apitokens", "0001_api_token"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(carry_over, migrations.RunPython.noop)]
