from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _

admin.site.site_header = _("Spare-account pool")
admin.site.site_title = _("Spare-account pool")
admin.site.index_title = _("Pool administration")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/", include("webhooks.urls")),
    path("api/", include("poolsite.api_urls")),
]
