"""Reachability in seconds. Ray's and MLflow's clients retry an absent host for minutes; a TCP connect answers at
once, so every command that talks to a server asks this first. Imports nothing of bench's."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def unreachable(url: str, timeout: float) -> str | None:
    """Why url's host and port do not take a TCP connection within timeout, or None when they do. A URL without a
    host, or with a port that is not a number, raises ValueError saying so."""
    u = urlparse(url)
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise ValueError("the port is not a number") from None
    if not u.hostname:
        raise ValueError("expected http://HOST:PORT")
    try:
        socket.create_connection((u.hostname, port), timeout=timeout).close()
    except OSError as e:
        return str(e.strerror or e)
    return None
