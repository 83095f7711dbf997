"""The SSRF guard: which webhook URLs the plugin may call.

A merchant's URL must not make our servers call into our own network (or the
cloud's metadata service), so only ``http(s)`` URLs whose host resolves to public
addresses pass. The check runs at registration and again at connect time
(``delivery``), because DNS can change in between. This module sends nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from .errors import InvalidUrl

__all__ = ["MAX_URL_LENGTH", "check_url", "public_addresses", "refusal_reason"]

#: The longest webhook URL accepted.
MAX_URL_LENGTH = 2048

_SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refusal_reason(address: str) -> str | None:
    """Why ``address`` (an IP literal) may not be called, or None if it is public.

    Private, loopback, link-local (169.254/16, cloud metadata), unspecified,
    multicast, shared and reserved addresses are refused; an IPv4 address embedded
    in IPv6 (``::ffff:127.0.0.1``, 6to4) is judged as itself."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            ip = embedded
    for reason in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{reason}"):
            return f"{ip} is not public ({reason.replace('_', '-')})"
    if not ip.is_global:
        return f"{ip} is not public"
    return None


def public_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, if all of them are public.

    Raises :class:`InvalidUrl` when the host does not resolve or any address
    is not public (one private answer is enough to refuse: a resolver may
    rotate its answers).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise InvalidUrl(f"The host {host!r} does not resolve.", host=host) from error
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise InvalidUrl(f"The host {host!r} does not resolve.", host=host)
    for address in addresses:
        reason = refusal_reason(address)
        if reason:
            raise InvalidUrl(f"The host {host!r} is refused: {reason}.", host=host)
    return addresses


def check_url(url: str, *, allow_private: bool = False) -> str:
    """``url`` if the plugin may deliver to it, else :class:`InvalidUrl` saying why.

    No whitespace or control characters anywhere (``urlsplit`` silently drops tabs
    and line breaks, so the host checked would not be the host called).
    ``allow_private`` (``ADDONS_WEBHOOK_ALLOW_PRIVATE_URLS``, for development)
    switches the address rules off; the scheme rule always holds."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"The URL must be a string of 1 to {MAX_URL_LENGTH} characters.")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidUrl("The URL must not contain spaces, line breaks or other control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InvalidUrl("The URL cannot be parsed.") from None
    if parts.scheme not in _SCHEMES:
        raise InvalidUrl("The URL must use http or https.")
    if not parts.hostname:
        raise InvalidUrl("The URL has no host.")
    if not allow_private:
        public_addresses(parts.hostname, port)
    return url
