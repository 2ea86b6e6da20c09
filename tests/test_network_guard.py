"""The suite's own guard: no test can open a connection beyond loopback."""

from __future__ import annotations

import socket

import pytest


def test_connecting_beyond_loopback_fails_inside_the_suite() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError, match="only connect to loopback"):
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed, and never tried
    sock.close()
