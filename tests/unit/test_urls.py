from __future__ import annotations

import pytest

from spool.urls import describe_host, mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:****@h:5432/db"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:****@h/db?sslmode=require"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://u:a@b@h/db", "postgresql://u:****@h/db"),
        ("postgresql://u:pw@h:notaport/db", "postgresql://u:****@h:notaport/db"),
        ("postgresql://u:pw@[bad/db", "<unparsable database URL>"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_describe_host():
    assert describe_host("postgresql://u:pw@db.example:6543/x") == "db.example:6543"
    assert describe_host("postgresql://u@/x?host=/var/run&port=5") == "/var/run:5"
    assert describe_host("postgresql://u@h/x") == "h:5432"
