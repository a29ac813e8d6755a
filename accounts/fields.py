from django.db import models
from django.views.decorators.debug import sensitive_variables

from accounts import crypto
from accounts.tokens import mask


class EncryptedTextField(models.BinaryField):
    """Text sealed with AES-256-GCM in the database and plain text in Python.

    A value that no configured key opens is read as a `crypto.Undecryptable` marker, never as
    text: a wrong or missing key must never look like a token, and one such row must not stop a
    page or a run that reads many (they tell the marker apart with isinstance). Writing the marker
    back stores the original ciphertext unchanged.
    """

    description = "Text encrypted at rest (AES-256-GCM)"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    @property
    def context(self) -> str:
        """What each ciphertext of this column is bound to: it opens in no other column or table."""
        return f"{self.model._meta.db_table}.{self.column}"

    @sensitive_variables()
    def from_db_value(self, value, expression, connection):
        if value is None:
            return None
        return crypto.decrypt_or_mark(value, context=self.context)

    def to_python(self, value):
        return value

    @sensitive_variables()
    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None or value == "":
            return None
        if isinstance(value, crypto.Undecryptable):
            return connection.Database.Binary(value.blob)
        if not isinstance(value, str):
            raise TypeError("EncryptedTextField takes text.")
        return connection.Database.Binary(crypto.encrypt(value, context=self.context))

    def get_lookup(self, lookup_name):
        # Ciphertext differs on every write, so any comparison would silently never match.
        if lookup_name != "isnull":
            raise TypeError(
                "Encrypted fields cannot be compared; query their lookup hashes instead."
            )
        return super().get_lookup(lookup_name)

    def value_to_string(self, obj):
        # Serialisers (dumpdata) must not print secrets.
        return mask(self.value_from_object(obj))
