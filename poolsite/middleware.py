"""The low-stock webhook's short path through the middleware stack."""

from django.urls import NoReverseMatch, reverse

from webhooks.views import low_stock


class WebhookFastPath:
    """Right after SecurityMiddleware: the low-stock webhook goes straight to its view.

    The webhook is called in bursts by the seat manager, authenticated by its X-API-Key header,
    and answers JSON; what the rest of the stack does is for the admin and the API, and costs
    each webhook call time for nothing (measured by bench/bench_middleware.py):

    - WhiteNoise serves static files: not this path.
    - Sessions, authentication, messages and django-axes: the webhook has no session, no user and
      no login form (axes watches logins only), and never reads request.user or request.session.
    - LocaleMiddleware: its answers are fixed English strings for the manager, never translated.
    - CommonMiddleware: the trailing slash is optional by the route itself; the Host check it
      does is kept here (request.get_host() refuses a host not in ALLOWED_HOSTS, as before).
    - CsrfViewMiddleware: the view is csrf_exempt (a machine caller with an API key).
    - XFrameOptionsMiddleware: a JSON answer is not framed; nosniff still comes from security.

    SecurityMiddleware, before this one, still redirects to HTTPS and adds its headers. Every other
    path, the admin's and the API's included, takes the whole stack unchanged.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.paths = None

    def __call__(self, request):
        if self.paths is None:
            try:
                path = reverse("low_stock").rstrip("/")
            except NoReverseMatch:  # a URLconf without the webhook (some tests): no short path
                self.paths = ()
            else:
                self.paths = (path, path + "/")  # the route takes both
        if request.path_info in self.paths:
            request.get_host()  # DisallowedHost (400) for a host not in ALLOWED_HOSTS, as CommonMiddleware did
            return low_stock(request)
        return self.get_response(request)
