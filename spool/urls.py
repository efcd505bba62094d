"""Database URL helpers that need no driver, so settings and messages can use them."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit


def mask_url(url: str) -> str:
    """The URL with its password replaced by ****, safe to print or log."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable database URL>"
    if password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:****@{host}"))


def describe_host(url: str) -> str:
    """Where a URL points, for one-line error messages: host:port or the socket folder."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        host = parts.hostname or query.get("host", ["local socket"])[0]
        port = parts.port or query.get("port", ["5432"])[0]
    except ValueError:
        return "<unparsable database URL>"
    return f"{host}:{port}"
