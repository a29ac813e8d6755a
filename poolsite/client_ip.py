"""The client's address for django-axes' lockout (AXES_CLIENT_IP_CALLABLE) and the webhook's record.

Directly served, it is REMOTE_ADDR, and X-Forwarded-For is ignored (anyone can send one). Behind
the TLS proxy (BEHIND_TLS_PROXY=1) REMOTE_ADDR is the proxy's, the same for every client: then the
client is the address the outermost trusted proxy saw, which is the TRUSTED_PROXY_COUNT-th entry
of X-Forwarded-For from the right (each proxy appends the address it received from; whatever
stands left of that was written by the client and is not trusted).
"""

import ipaddress

from django.conf import settings


def client_ip(request) -> str | None:
    remote = request.META.get("REMOTE_ADDR")
    if not getattr(settings, "BEHIND_TLS_PROXY", False):
        return remote
    count = settings.TRUSTED_PROXY_COUNT
    hops = [
        hop.strip()
        for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if hop.strip()
    ]
    if count < 1 or len(hops) < count:
        return remote  # not written by as many proxies as configured: nothing in it to trust
    try:
        return str(ipaddress.ip_address(hops[-count]))
    except ValueError:
        return remote
