"""The admin's sections: the pool and replenishment first, everything else under System, last, in
both languages, on the home page and in the side menu; each model's pages where they were.
Also the console's language: 简体中文 unless the browser asks for English."""

import re

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

SECTION_RE = re.compile(r'<div class="app-([\w-]+) module')
LANGUAGES = ("en", "zh-hans")


def sections(html: str) -> list[str]:
    return SECTION_RE.findall(html)


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_pool_comes_first_and_system_last_on_the_home_page_and_in_the_menu(
    admin_client, language
):
    # Before: sorted by translated name, 简体中文 put 认证和授权, API 令牌 and Axes above 账号池.
    home = admin_client.get(reverse("admin:index"), headers={"Accept-Language": language})
    assert sections(home.content.decode()) == ["accounts", "webhooks", "alerts", "system"]
    pool = admin_client.get(
        reverse("admin:accounts_account_changelist"), headers={"Accept-Language": language}
    )
    menu = pool.content.decode().split('id="nav-sidebar"', 1)[1]
    assert sections(menu) == ["accounts", "webhooks", "alerts", "system"]


def test_system_holds_every_other_model_named_in_the_readers_language(admin_client):
    page = admin_client.get(reverse("admin:index"), headers={"Accept-Language": "zh-hans"})
    system = next(app for app in page.context["app_list"] if app["app_label"] == "system")
    assert str(system["name"]) == "系统"
    names = [str(model["name"]) for model in system["models"]]
    # API tokens, then auth, then django-axes, then django-tasks (poolsite/admin_site.py).
    assert names == ["API 令牌", "用户", "组", "登录失败", "登录尝试", "登录日志", "任务结果"]
    english = admin_client.get(reverse("admin:index"))
    system = next(app for app in english.context["app_list"] if app["app_label"] == "system")
    assert str(system["name"]) == "System"
    assert "Access attempts" in [str(model["name"]) for model in system["models"]]


def test_every_model_of_system_keeps_its_pages(admin_client):
    page = admin_client.get(reverse("admin:system"), headers={"Accept-Language": "zh-hans"})
    assert page.status_code == 200
    (system,) = page.context["app_list"]
    urls = [model["admin_url"] for model in system["models"]]
    assert "/admin/auth/user/" in urls and "/admin/axes/accessattempt/" in urls
    for url in urls:
        assert admin_client.get(url).status_code == 200, url
    # A section's own page lists its models, without the dashboard of the home page.
    assert 'id="pool-dashboard"' not in page.content.decode()
    assert 'id="pool-dashboard"' not in admin_client.get("/admin/auth/").content.decode()
    assert 'id="pool-dashboard"' in admin_client.get(reverse("admin:index")).content.decode()


def test_system_is_for_staff_who_may_see_something_in_it(client, django_user_model):
    from django.contrib.auth.models import Permission

    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("admin:system")).status_code == 404  # nothing it may see
    staff.user_permissions.add(Permission.objects.get(codename="view_user"))
    page = client.get(reverse("admin:system"))
    assert [m["object_name"] for m in page.context["app_list"][0]["models"]] == ["User"]
    home = client.get(reverse("admin:index"))
    assert sections(home.content.decode()) == ["system"]


def test_the_console_speaks_chinese_unless_the_browser_asks_for_english(admin_user):
    assert settings.LANGUAGE_CODE == "zh-hans"
    client = Client()  # asks for no language (the `client` fixture asks for English)
    client.force_login(admin_user)
    url = reverse("admin:accounts_account_load")
    asked = {
        None: "加载账号",  # no preference: the default
        "en": "Load accounts",
        "en-US,en;q=0.9": "Load accounts",
        "zh-CN,zh;q=0.9": "加载账号",
        "fr": "加载账号",  # a language the console does not speak: the default
    }
    for accept, expected in asked.items():
        headers = {"Accept-Language": accept} if accept else {}
        page = client.get(url, headers=headers).content.decode()
        assert f"<h1>{expected}</h1>" in page, accept


def test_english_is_one_click_away(admin_user):
    client = Client()  # no Accept-Language: 简体中文
    client.force_login(admin_user)
    page = client.get(reverse("admin:index")).content.decode()
    # The switch names each language in its own words, so an English reader finds "English".
    assert '<option value="en" lang="en">English</option>' in page
    assert '<option value="zh-hans" lang="zh-hans" selected>简体中文</option>' in page
    client.post(reverse("set_language"), {"language": "en", "next": "/admin/"})
    assert "<h1>Pool administration</h1>" in client.get(reverse("admin:index")).content.decode()
