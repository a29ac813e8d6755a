from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_lazy as _

MSG_NOTHING_GIVEN = _("Paste some accounts or choose a file.")
MSG_BOTH_GIVEN = _("Paste accounts or choose a file, not both.")
MSG_TOO_BIG = _("The file is larger than %(limit)s. Load big files with `manage.py load_accounts`.")
MSG_NOT_TEXT = _("The file is not text (it contains binary data).")
MSG_NOT_UTF8 = _("The file is not UTF-8 text.")
MSG_BAD_EXTENSION = _("Choose a .txt or .csv file.")


class LoadAccountsForm(forms.Form):
    text = forms.CharField(
        label=_("Paste accounts, one per line"),
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 110, "spellcheck": "false", "autocomplete": "off"}),
    )
    file = forms.FileField(label=_("or upload a .txt / .csv file"), required=False)
    label = forms.CharField(
        label=_("Batch label"),
        max_length=100,
        required=False,
        help_text=_("Shown in the pool list to tell loads apart. Default: the file name or the date."),
    )

    def clean_text(self):
        text = self.cleaned_data["text"]
        if len(text.encode()) > settings.POOL_UPLOAD_MAX_BYTES:
            raise forms.ValidationError(MSG_TOO_BIG % {"limit": filesizeformat(settings.POOL_UPLOAD_MAX_BYTES)})
        return text

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload:
            return None
        if not upload.name.lower().endswith((".txt", ".csv")):
            raise forms.ValidationError(MSG_BAD_EXTENSION)
        if upload.size > settings.POOL_UPLOAD_MAX_BYTES:
            raise forms.ValidationError(MSG_TOO_BIG % {"limit": filesizeformat(settings.POOL_UPLOAD_MAX_BYTES)})
        raw = upload.read()
        if b"\x00" in raw:
            raise forms.ValidationError(MSG_NOT_TEXT)
        try:
            return upload.name, raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise forms.ValidationError(MSG_NOT_UTF8) from None

    def clean(self):
        cleaned = super().clean()
        text, upload = cleaned.get("text"), cleaned.get("file")
        if self.errors:
            return cleaned
        if text and text.strip() and upload:
            raise forms.ValidationError(MSG_BOTH_GIVEN)
        if not upload and not (text and text.strip()):
            raise forms.ValidationError(MSG_NOTHING_GIVEN)
        cleaned["filename"], cleaned["content"] = upload if upload else ("", text)
        return cleaned

