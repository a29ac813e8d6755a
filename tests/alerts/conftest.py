"""Fixtures of the alert tests: destinations on loopback allowed, a receiver, a stub network."""

import socket

import pytest

from tests.support.notify import Receiver


@pytest.fixture(autouse=True)
def loopback_destinations_allowed(settings):
    """These tests deliver to loopback receivers; the tests of the refusal turn it off again."""
    settings.NOTIFY_ALLOW_PRIVATE_HOSTS = True


@pytest.fixture
def notifications_in_english(settings):
    """Notifications go out in NOTIFY_LANGUAGE (简体中文 by default); these tests compare them with
    the English messages (test_notify_language.py checks the default)."""
    settings.NOTIFY_LANGUAGE = "en"


@pytest.fixture
def receiver(settings):
    with Receiver() as server:
        settings.NOTIFY_URLS = [server.url()]
        yield server


@pytest.fixture
def network(monkeypatch, settings):
    """Resolves every name to `network.addresses`; records (and fails) any connection attempt."""
    settings.NOTIFY_ALLOW_PRIVATE_HOSTS = False

    class Network:
        addresses = ["1.1.1.1"]
        looked_up: list[str] = []
        connections: list = []

    def getaddrinfo(host, port, *args, **kwargs):
        Network.looked_up.append(host)
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port or 0),
            )
            for a in Network.addresses
        ]

    def connect(sock, address):
        Network.connections.append(address)
        raise AssertionError(f"a test tried to connect to {address}")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    return Network
