"""Where notifications may go: apprise URLs of the documented kinds, to public hosts only, masked
wherever they are shown (the URL carries a bot token or a password)."""

from __future__ import annotations

import ipaddress
import logging
import socket

from django.conf import settings
from django.utils.translation import gettext_lazy as _

from accounts.tokens import mask

# Apprise logs the full request URL, bot token included, at DEBUG: keep its logger above that
# whatever LOG_LEVEL is. (Its warnings name the service and the failure, not the URL.)
logging.getLogger("apprise").setLevel(logging.WARNING)

# Per destination, retries included: a chat service that hangs must not hold a worker for long.
SEND_TIMEOUT_SECONDS = 20

MSG_URL_NOT_RECOGNISED = _(
    "Apprise does not recognise this URL: check its parts against the apprise documentation "
    "(tgram://, wecombot://, dingtalk://, feishu://, bark://, barks://, mailto://, mailtos://)."
)
MSG_SCHEME_NOT_ALLOWED = _(
    "Only these kinds of destination are accepted: tgram:// (Telegram), wecombot:// (WeCom bot), "
    "dingtalk:// (DingTalk), feishu:// (Feishu), bark:// or barks:// (Bark), mailto:// or mailtos:// (email)."
)
MSG_HOST_NOT_ALLOWED = _(
    "The host of this destination is a loopback, private, link-local, multicast, reserved or cloud metadata "
    "address: notifications are never sent there (NOTIFY_ALLOW_PRIVATE_HOSTS=1 allows it)."
)
MSG_HOST_UNKNOWN = _("The host name of this destination cannot be resolved.")


def notification_url_mask(*, url: str) -> str:
    """What may be shown of an apprise URL: its scheme and its last 4 characters."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return mask(url.strip())
    return f"{scheme[:16]}://{mask(rest)}"


# The kinds of destination the product documents. Anything else (json://, xml://, form://, …)
# could make the server send arbitrary requests to arbitrary places.
ALLOWED_SCHEMES = frozenset(
    {"tgram", "wecombot", "dingtalk", "feishu", "bark", "barks", "mailto", "mailtos"}
)
# These talk only to their service's fixed public API (apprise's constant, not a part of the URL).
FIXED_HOST_SCHEMES = frozenset({"tgram", "wecombot", "dingtalk", "feishu"})
# NAT64 wraps an IPv4 address: judged by the address it wraps.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _scheme(url: str) -> str:
    return url.strip().partition("://")[0].lower()


def notification_service_host(service) -> str | None:
    """The host a Bark or email destination connects to (a part of its URL); None for the
    fixed-host services."""
    if _scheme(service.url()) in FIXED_HOST_SCHEMES:
        return None
    return getattr(service, "smtp_host", None) or service.host or ""


def address_allowed(address: str) -> bool:
    """Whether a notification may be sent to this IP address: a public, unicast one."""
    ip = ipaddress.ip_address(
        address.split("%", 1)[0]
    )  # an IPv6 scope (fe80::1%eth0) is local anyway
    if ip.version == 6:
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
    )


def notification_host_problem(*, host: str | None, resolve: bool = True) -> str | None:
    """Why a notification must not go to `host` (a translatable message), or None.

    The name is resolved (unless `resolve` is false: then only an address written in the URL is
    judged) and every address it resolves to must be public: loopback, private, link-local
    (cloud metadata at 169.254.169.254), multicast and reserved ones are refused, unless
    NOTIFY_ALLOW_PRIVATE_HOSTS is set.
    """
    if host is None or settings.NOTIFY_ALLOW_PRIVATE_HOSTS:
        return None
    host = host.strip().strip("[]")
    if not host:
        return MSG_HOST_UNKNOWN
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        if not resolve:
            return None
        try:
            found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return MSG_HOST_UNKNOWN
        addresses = [info[4][0] for info in found]
    try:
        if addresses and all(address_allowed(address) for address in addresses):
            return None
    except ValueError:
        pass
    return MSG_HOST_NOT_ALLOWED if addresses else MSG_HOST_UNKNOWN


def notification_service(url: str):
    """(apprise service or None, problem or None) for an allowed scheme; redirects never followed."""
    import apprise

    if _scheme(url) not in ALLOWED_SCHEMES:
        return None, MSG_SCHEME_NOT_ALLOWED
    service = apprise.Apprise.instantiate(url.strip(), asset=notification_asset())
    if service is None:
        return None, MSG_URL_NOT_RECOGNISED
    # A redirect could lead anywhere, the addresses checked here included: `?redirect=yes` in the
    # URL does not turn them back on.
    service.redirects = False
    return service, None


def notification_url_problem(*, url: str, resolve: bool = True) -> str | None:
    """Why this URL cannot be a destination (a translatable message), or None: its scheme is one
    the product documents, apprise can use it, and its host is not an internal address."""
    service, problem = notification_service(url)
    if problem:
        return problem
    return notification_host_problem(host=notification_service_host(service), resolve=resolve)


def notification_asset():
    # Imported where used: apprise takes about half a second to load its plugins, which every web
    # process and command would otherwise pay at start-up.
    import apprise

    return apprise.AppriseAsset(service_timeout=SEND_TIMEOUT_SECONDS, http_redirects=False)
