"""webhooks.urls: the SSRF guard refuses every URL of the issue's table by default."""

from __future__ import annotations

import socket

import pytest

from webhooks import InvalidUrl
from webhooks.urls import check_url, public_addresses

REFUSED = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://localhost./hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://10.0.0.1/hook",
    "http://10.255.255.254/hook",
    "http://172.16.0.1/hook",
    "http://172.31.255.254/hook",
    "http://192.168.0.1/hook",
    "http://192.168.255.254/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/hook",
    "http://100.64.0.1/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "ftp://93.184.216.34/hook",
    "javascript:alert(1)",
    "https:///no-host",
    "",
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused_by_default(url):
    with pytest.raises(InvalidUrl) as caught:
        check_url(url)
    assert caught.value.code == "invalid_url" and caught.value.status == 422
    assert "url" in caught.value.fields


@pytest.fixture
def fake_dns(monkeypatch):
    """A resolver that knows a few names (no network in tests)."""
    table = {
        "rebind.example.com": ["127.0.0.1"],
        "mixed.example.com": ["93.184.216.34", "10.0.0.7"],
        "public.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
    }
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in table[host]]
        if host.endswith(".example.com") or host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_hostname_resolving_to_loopback_is_refused(fake_dns):
    with pytest.raises(InvalidUrl, match="loopback"):
        check_url("https://rebind.example.com/hook")


def test_a_hostname_with_any_private_address_is_refused(fake_dns):
    with pytest.raises(InvalidUrl, match="private"):
        check_url("https://mixed.example.com/hook")


def test_a_hostname_that_does_not_resolve_is_refused(fake_dns):
    with pytest.raises(InvalidUrl, match="does not resolve"):
        check_url("https://nowhere.invalid/hook")


def test_public_hosts_are_accepted(fake_dns):
    assert check_url("https://public.example.com/hooks?x=1") == "https://public.example.com/hooks?x=1"
    assert check_url("http://93.184.216.34:8080/hook") == "http://93.184.216.34:8080/hook"
    assert public_addresses("public.example.com", 443)[0] == "93.184.216.34"


def test_allowing_private_urls_lifts_the_address_rules_only():
    assert check_url("http://127.0.0.1:9/hook", allow_private=True) == "http://127.0.0.1:9/hook"
    with pytest.raises(InvalidUrl):
        check_url("file:///etc/passwd", allow_private=True)
    with pytest.raises(InvalidUrl):
        check_url("gopher://127.0.0.1/", allow_private=True)


def test_overlong_urls_are_refused():
    with pytest.raises(InvalidUrl):
        check_url("https://93.184.216.34/" + "a" * 2048)


@pytest.mark.parametrize("url", ["http://exa\r\nmple.com/hook", "http://example.com/a\r\nX-Injected: yes",
                                 "http://example.com/a b", "http://example.com/\tx", "http://example.com/\x00",
                                 "http://example.com/\x1b[0m", "http://example.com/\u2028", " http://example.com/"])
def test_whitespace_and_control_characters_are_refused_even_for_private_urls(url):
    """``urlsplit`` drops tabs and line breaks: the host checked would not be the host called."""
    with pytest.raises(InvalidUrl):
        check_url(url, allow_private=True)
