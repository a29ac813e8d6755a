from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _

from accounts.models import Account
from accounts.parser import label_problem, notes_problem
from accounts.tokens import mask
from accounts.uploads import NotText, upload_decode

MSG_NOTHING_GIVEN = _("Paste some accounts or choose a file.")
MSG_BOTH_GIVEN = _("Paste accounts or choose a file, not both.")
MSG_TOO_BIG = _("The file is larger than %(limit)s. Load big files with `manage.py load_accounts`.")
MSG_NOT_TEXT = _("The file is not text (it contains binary data).")
MSG_NOT_UTF8 = _("The file is not UTF-8 text.")
NOT_TEXT_MESSAGES = {NotText.BINARY: MSG_NOT_TEXT, NotText.NOT_UTF8: MSG_NOT_UTF8}
MSG_BAD_EXTENSION = _("Choose a .txt or .csv file.")
MSG_KEEP = _("Now: %(value)s. Leave blank to keep it.")
MSG_KEEP_NONE = _("Now: none. Leave blank to keep it that way.")
MSG_ONE_VALUE = _("Paste one value only: no spaces, commas or “|”.")


class LoadAccountsForm(forms.Form):
    text = forms.CharField(
        label=_("Paste accounts, one per line"),
        required=False,
        strip=False,
        widget=forms.Textarea(
            attrs={"rows": 12, "cols": 110, "spellcheck": "false", "autocomplete": "off"}
        ),
    )
    file = forms.FileField(label=_("or upload a .txt / .csv file"), required=False)
    label = forms.CharField(
        label=_("Batch label"),
        max_length=100,
        required=False,
        help_text=_(
            "Shown in the pool list to tell loads apart. Default: the file name or the date."
        ),
    )

    supplier = forms.CharField(
        label=_("Supplier"),
        max_length=100,
        required=False,
        help_text=_(
            "Who sold these accounts: the batches page compares suppliers by how long their accounts last."
        ),
    )

    def clean_label(self):
        label = self.cleaned_data["label"]
        problem = label_problem(label)
        if problem is not None:
            raise forms.ValidationError(str(problem.message))
        return label

    def clean_supplier(self):
        supplier = self.cleaned_data["supplier"].strip()
        problem = label_problem(supplier)
        if problem is not None:
            raise forms.ValidationError(str(problem.message))
        return supplier

    def clean_text(self):
        text = self.cleaned_data["text"]
        if len(text.encode()) > settings.POOL_UPLOAD_MAX_BYTES:
            raise forms.ValidationError(
                MSG_TOO_BIG % {"limit": filesizeformat(settings.POOL_UPLOAD_MAX_BYTES)}
            )
        return text

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload:
            return None
        if not upload.name.lower().endswith((".txt", ".csv")):
            raise forms.ValidationError(MSG_BAD_EXTENSION)
        if upload.size > settings.POOL_UPLOAD_MAX_BYTES:
            raise forms.ValidationError(
                MSG_TOO_BIG % {"limit": filesizeformat(settings.POOL_UPLOAD_MAX_BYTES)}
            )
        try:
            return upload.name, upload_decode(raw=upload.read())
        except NotText as problem:
            raise forms.ValidationError(NOT_TEXT_MESSAGES[problem.kind]) from None

    def clean(self):
        cleaned = super().clean()
        text, upload = cleaned.get("text"), cleaned.get("file")
        if self.errors:
            return cleaned
        if text and text.strip() and upload:
            raise forms.ValidationError(MSG_BOTH_GIVEN)
        filename, content = upload if upload else ("", text or "")
        # A file of blank lines is as empty as a blank paste: nothing to stage.
        if not content.strip():
            raise forms.ValidationError(MSG_NOTHING_GIVEN)
        cleaned["filename"], cleaned["content"] = filename, content
        return cleaned


class AccountNotesForm(forms.ModelForm):
    """The one field staff edit on an account's page, checked by the parser like every other value."""

    class Meta:
        model = Account
        fields = ("notes",)

    def clean_notes(self):
        notes = self.cleaned_data["notes"]
        problem = notes_problem(notes)
        if problem is not None:
            raise forms.ValidationError(str(problem.message))
        return notes


class _SecretInput(forms.PasswordInput):
    """A pasted secret is never sent back to the browser, not even when the form shows errors."""

    def __init__(self):
        super().__init__(
            render_value=False, attrs={"autocomplete": "off", "spellcheck": "false", "size": 80}
        )


class RequeueAccountForm(forms.Form):
    """New material for a rejected account; a blank field keeps what the account has.

    Only shapes are checked by the service (through the parser), so fields are plain text here.
    """

    email = forms.CharField(label=_("email"), max_length=254, required=False)
    access_token = forms.CharField(label=_("access token"), required=False, widget=_SecretInput())
    session_token = forms.CharField(label=_("session token"), required=False, widget=_SecretInput())
    refresh_token = forms.CharField(label=_("refresh token"), required=False, widget=_SecretInput())
    client_id = forms.CharField(label=_("client id"), max_length=200, required=False)
    account_id = forms.CharField(label=_("account id"), max_length=64, required=False)

    SECRETS = ("access_token", "session_token", "refresh_token")

    def __init__(self, *args, account, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            current = getattr(account, name)
            shown = mask(current) if name in self.SECRETS else current
            # Django's form templates show help text unescaped, and an opaque refresh token may end
            # in markup: escaped here and marked safe, it shows the same in every template.
            field.help_text = (
                mark_safe(MSG_KEEP % {"value": escape(shown)}) if current else MSG_KEEP_NONE
            )

    def clean(self):
        cleaned = super().clean()
        # Spaces, commas and "|" separate values on a line: the parser would read several parts
        # and report them by position, which means nothing on this form.
        for name, value in list(cleaned.items()):
            if value and any(c.isspace() or c in ",|" for c in value):
                self.add_error(name, MSG_ONE_VALUE)
        return cleaned

    @property
    def changes(self) -> dict[str, str]:
        return {name: value for name, value in self.cleaned_data.items() if value}
