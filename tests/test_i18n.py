"""The 简体中文 catalogue is complete, well-formed, compiled, and up to date with the source.

No database is needed. When a test here fails, regenerate the catalogue:

    SECRET_KEY=x POOL_ENCRYPTION_KEY=... POOL_IGNORE_DOTENV=1 .venv/bin/python manage.py makemessages \
        -l zh_Hans --ignore=.venv --ignore=bench --ignore=devtools --ignore=tests --ignore=staticfiles
    (translate the new or fuzzy entries in locale/zh_Hans/LC_MESSAGES/django.po)
    ... .venv/bin/python manage.py compilemessages -l zh_Hans --ignore=.venv

and commit both django.po and django.mo.
"""

from __future__ import annotations

import gettext
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.support.catalogue import _PLACEHOLDER_RE, Entry, parse_po, split_header

ROOT = Path(__file__).resolve().parent.parent
LOCALE_DIR = ROOT / "locale"
CATALOGUE_DIR = LOCALE_DIR / "zh_Hans" / "LC_MESSAGES"
PO_PATH = CATALOGUE_DIR / "django.po"
MO_PATH = CATALOGUE_DIR / "django.mo"

# The same exclusions as the documented makemessages command.
MAKEMESSAGES_IGNORE = (".venv", "bench", "devtools", "tests", "staticfiles")
# Never copied into the scratch project: not source, or large, or secret.
NOT_COPIED = {
    ".git",
    ".venv",
    "bench",
    "devtools",
    "tests",
    "staticfiles",
    "locale",
    ".env",
    ".hypothesis",
    ".pytest_cache",
}
# What makemessages reads (its default extensions), plus nothing else.
SOURCE_SUFFIXES = (".py", ".html", ".txt")

MAKEMESSAGES_ENV = {
    "SECRET_KEY": "x",
    "POOL_ENCRYPTION_KEY": "dGVzdHMtb25seS1rZXktMzItYnl0ZXMtbG9uZy4uLi4=",
    "POOL_IGNORE_DOTENV": "1",
    "DJANGO_SETTINGS_MODULE": "poolsite.settings",
}


def placeholders(text: str) -> tuple[Counter, list[str]]:
    """Named placeholders (as a multiset of name+conversion) and positional ones (in order)."""
    named, positional = Counter(), []
    for match in _PLACEHOLDER_RE.finditer(text):
        name, conversion = match.groups()
        if conversion == "%":
            continue
        if name is None:
            positional.append(f"%{conversion}")
        else:
            named[f"%({name}){conversion}"] += 1
    return named, positional


def _shape(text: str) -> tuple[set[str], list[str]]:
    named, positional = placeholders(text)
    return set(named), positional


# --- Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalogue():
    assert PO_PATH.is_file(), f"{PO_PATH} is missing: run makemessages -l zh_Hans"
    return split_header(parse_po(PO_PATH))


# --- The parser itself ------------------------------------------------------------------------


def test_parser_reads_multiline_plural_and_flags(tmp_path):
    po = tmp_path / "x.po"
    po.write_text(
        'msgid ""\nmsgstr ""\n"Language: zh_Hans\\n"\n"Plural-Forms: nplurals=1; plural=0;\\n"\n\n'
        "#: a.py:1\n#, fuzzy, python-format\n"
        'msgid ""\n"Hello %(name)s, "\n"\\"quoted\\"\\n"\nmsgstr "你好 %(name)s"\n'
        '#, python-format\nmsgid "%(n)d item"\nmsgid_plural "%(n)d items"\nmsgstr[0] ""\n"%(n)d 项"\n\n'
        'msgctxt "verb"\nmsgid "Load"\nmsgstr "加载"\n\n'
        '#~ msgid "gone"\n#~ msgstr "已删除"\n',
        encoding="utf-8",
    )
    header, entries = split_header(parse_po(po))
    assert header["Language"] == "zh_Hans"
    first, second, third = entries
    assert first.msgid == 'Hello %(name)s, "quoted"\n'
    assert first.flags == {"fuzzy", "python-format"}
    assert first.msgstr == {"": "你好 %(name)s"}
    assert (second.msgid, second.msgid_plural, second.msgstr) == (
        "%(n)d item",
        "%(n)d items",
        {"0": "%(n)d 项"},
    )
    assert second.flags == {"python-format"}
    assert third.key == ("verb", "Load") and third.msgstr == {"": "加载"}
    assert placeholders("%(a)s and %(b)d, %s%% %05.1f") == (
        Counter({"%(a)s": 1, "%(b)d": 1}),
        ["%s", "%f"],
    )


# --- The catalogue is complete and well-formed ------------------------------------------------


def test_header(catalogue):
    header, _ = catalogue
    assert header.get("Language") == "zh_Hans"
    assert "charset=UTF-8" in header.get("Content-Type", "")
    assert header.get("Plural-Forms", "").replace(" ", "") == "nplurals=1;plural=0;"


def test_catalogue_is_not_empty(catalogue):
    _, entries = catalogue
    assert len(entries) > 50
    keys = [e.key for e in entries]
    duplicated = [k for k, n in Counter(keys).items() if n > 1]
    assert not duplicated, f"msgids given more than once: {duplicated}"


def test_every_entry_is_translated_and_not_fuzzy(catalogue):
    _, entries = catalogue
    fuzzy = [str(e) for e in entries if "fuzzy" in e.flags]
    empty = [str(e) for e in entries if not all(text.strip() for text in e.msgstr.values())]
    assert not fuzzy, "fuzzy entries (check and clear the flag):\n" + "\n".join(fuzzy)
    assert not empty, "untranslated entries:\n" + "\n".join(empty)


def test_plural_entries_have_exactly_one_form(catalogue):
    # zh has one plural form: msgstr[0] and nothing else.
    _, entries = catalogue
    wrong = [
        str(e)
        for e in entries
        if (e.msgid_plural is not None and set(e.msgstr) != {"0"})
        or (e.msgid_plural is None and set(e.msgstr) != {""})
    ]
    assert not wrong, (
        "plural entries need msgstr[0] only, singular entries a plain msgstr:\n" + "\n".join(wrong)
    )


def test_placeholders_match(catalogue):
    _, entries = catalogue
    problems = []
    for entry in entries:
        if entry.msgid_plural is None:
            expected = _shape(entry.msgid)
        else:
            # With one plural form, msgstr[0] is used for every n: it must carry the plural's placeholders.
            expected = _shape(entry.msgid_plural)
            if _shape(entry.msgid)[0] - expected[0]:
                problems.append(f"{entry}: msgid has placeholders msgid_plural lacks")
        for slot, text in entry.msgstr.items():
            if _shape(text) != expected:
                problems.append(f"{entry} msgstr[{slot}]: {_shape(text)} != {expected}")
    assert not problems, "placeholder mismatches:\n" + "\n".join(problems)


# --- The compiled catalogue matches the .po ---------------------------------------------------


def test_mo_is_compiled_from_the_current_po(catalogue):
    _, entries = catalogue
    assert MO_PATH.is_file(), f"{MO_PATH} is missing: run compilemessages -l zh_Hans"
    with MO_PATH.open("rb") as fp:
        mo = gettext.GNUTranslations(fp)
    assert mo.info().get("language") == "zh_Hans"
    assert mo.charset().lower() == "utf-8"

    def mo_key(entry: Entry):
        msgid = entry.msgid if entry.msgctxt is None else f"{entry.msgctxt}\x04{entry.msgid}"
        return msgid if entry.msgid_plural is None else (msgid, 0)

    stale = []
    for entry in entries:
        want = entry.msgstr.get("", entry.msgstr.get("0"))
        got = mo._catalog.get(mo_key(entry))
        if got != want:
            stale.append(f"{entry}: .mo has {got!r}, .po has {want!r}")
        if entry.msgid_plural is not None:
            for n in (1, 2, 5):
                if (
                    mo.ngettext(entry.msgid, entry.msgid_plural, n) != want
                    and entry.msgctxt is None
                ):
                    stale.append(f"{entry}: ngettext(n={n}) does not give msgstr[0]")
    assert not stale, "django.mo is out of date (run compilemessages):\n" + "\n".join(stale)

    po_keys = {mo_key(e) for e in entries}
    extra = [
        k
        for k in mo._catalog
        if k != "" and k not in po_keys and not (isinstance(k, tuple) and k[1] > 0)
    ]
    assert not extra, (
        f"django.mo holds messages the .po no longer has (run compilemessages): {extra}"
    )


# --- The catalogue is up to date with the source ----------------------------------------------


def _copy_sources(destination: Path) -> None:
    def ignore(directory, names):
        dropped = set()
        for name in names:
            path = Path(directory) / name
            if name == "__pycache__" or (path.is_file() and not name.endswith(SOURCE_SUFFIXES)):
                dropped.add(name)
        return dropped

    for item in ROOT.iterdir():
        if item.name in NOT_COPIED:
            continue
        if item.is_dir():
            shutil.copytree(item, destination / item.name, ignore=ignore, symlinks=True)
        elif item.name.endswith(SOURCE_SUFFIXES):
            shutil.copy2(item, destination / item.name)
    shutil.copytree(LOCALE_DIR, destination / "locale")


@pytest.mark.skipif(
    shutil.which("xgettext") is None, reason="xgettext (GNU gettext) is not installed"
)
def test_catalogue_has_every_message_of_the_source(tmp_path, catalogue):
    project = tmp_path / "project"
    project.mkdir()
    _copy_sources(project)
    env = {**os.environ, **MAKEMESSAGES_ENV}
    env.pop("PYTHONPATH", None)
    command = [
        sys.executable,
        "manage.py",
        "makemessages",
        "-l",
        "zh_Hans",
        "--keep-pot",
        "--no-location",
    ]
    command += [f"--ignore={pattern}" for pattern in MAKEMESSAGES_IGNORE]
    result = subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"makemessages failed:\n{result.stdout}\n{result.stderr}"
    pot = project / "locale" / "django.pot"
    assert pot.is_file(), f"makemessages wrote no template:\n{result.stdout}\n{result.stderr}"

    _, source_entries = split_header(parse_po(pot))
    _, committed = catalogue
    source = {e.key: e for e in source_entries}
    ours = {e.key: e for e in committed}
    assert len(source) > 50, "makemessages found suspiciously few messages; is the copy complete?"

    missing = sorted(k[1] for k in source.keys() - ours.keys())
    assert not missing, (
        f"{len(missing)} message(s) in the source are not in {PO_PATH.relative_to(ROOT)} "
        "(run makemessages, translate, compilemessages):\n" + "\n".join(map(repr, missing))
    )
    plural_changed = sorted(k[1] for k in source if source[k].msgid_plural != ours[k].msgid_plural)
    assert not plural_changed, (
        f"plural forms changed in the source (run makemessages): {plural_changed}"
    )
    gone = sorted(k[1] for k in ours.keys() - source.keys())
    assert not gone, (
        f"{len(gone)} message(s) in the catalogue are no longer in the source (run makemessages):\n"
        + "\n".join(map(repr, gone))
    )


# --- The running application speaks Chinese ---------------------------------------------------


def test_strings_render_in_simplified_chinese():
    from django.template import Context, Template
    from django.utils.translation import gettext, ngettext, override

    from accounts.apps import AccountsConfig
    from accounts.models import Account, AccountStatus

    with override("zh-hans"):
        assert str(AccountStatus.AVAILABLE.label) == "可用"
        assert gettext("Load accounts") == "加载账号"
        assert str(Account._meta.verbose_name) == "账号"
        assert str(AccountsConfig.verbose_name) == "账号池"
        assert (
            ngettext("Retired %(n)d account.", "Retired %(n)d accounts.", 3) % {"n": 3}
            == "已停用 3 个账号。"
        )
        html = Template(
            "{% load i18n %}{% blocktranslate count n=total %}Save {{ n }} account{% plural %}"
            "Save {{ n }} accounts{% endblocktranslate %}"
        ).render(Context({"total": 7}))
        assert html == "保存 7 个账号"
    with override("en"):
        assert str(AccountStatus.AVAILABLE.label) == "available"


def test_the_product_has_one_chinese_name(catalogue):
    # 备用账号池, 号池 and 账号池 were all in use; 账号池 is the one (the site's title says so).
    _, entries = catalogue
    other_name = re.compile(r"备用账号池|(?<!账)号池")
    texts = [(str(e), text) for e in entries for text in e.msgstr.values()]
    texts += [
        (str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
        for path in [
            ROOT / "README.md",
            *(ROOT / "docs").glob("*.md"),
            *(ROOT / "templates").rglob("*.html"),
        ]
    ]
    wrong = [where for where, text in texts if other_name.search(text)]
    assert not wrong, "another Chinese name than 账号池:\n" + "\n".join(wrong)
    from django.utils.translation import override

    from poolsite.admin_site import PoolAdminSite

    with override("zh-hans"):
        assert str(PoolAdminSite.site_header) == "账号池"
