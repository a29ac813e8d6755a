from django.urls import re_path

from webhooks import views

urlpatterns = [
    # The trailing slash is optional: the manager posts to whatever URL staff typed in.
    re_path(r"^low-stock/?$", views.low_stock, name="low_stock"),
]
