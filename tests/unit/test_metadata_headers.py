"""The fast METADATA header reader agrees with packaging's email parser, or hands over to it."""

from __future__ import annotations

import packaging.metadata
import pytest

from aperio_plugins._manifest import _plain_headers

PLAIN = [
    b"Metadata-Version: 2.1\nName: acme-x\nVersion: 1.0\nRequires-Dist: aperio-hookspecs>=1.0,<2\n\nBody: not a header\n",
    b"Metadata-Version: 2.1\r\nName: acme-x\r\nVersion: 1.0\r\nRequires-Dist: a\r\nRequires-Dist: b; extra == 'x'\r\n",
    b"Name: acme-x\nversion:   2.0  \nREQUIRES-DIST: aperio-hookspecs>=1.0\n",
    b"Name: acme-x\nVersion: 1.0\n",
]
UNUSUAL = [
    b"Name: acme-x\nVersion: 1.0\nRequires-Dist: aperio-hookspecs\n  >=1.0\n",  # a folded line
    b"Name: acme-x\nName: other\nVersion: 1.0\n",  # a repeated Name
    b"Name: acme-\xff\nVersion: 1.0\n",  # not UTF-8
    b"Name: acme-x\nnot a header\nVersion: 1.0\n",
    b"Name: acme-x\rVersion: 1.0\n",  # a bare carriage return
    b"\nName: acme-x\n",  # no header block at all
]


@pytest.mark.parametrize("data", PLAIN)
def test_plain_headers_read_what_the_email_parser_reads(data: bytes) -> None:
    raw, _ = packaging.metadata.parse_email(data.split(b"\n\n", 1)[0])
    assert _plain_headers(data) == (raw.get("name"), raw.get("version"), list(raw.get("requires_dist") or []))


@pytest.mark.parametrize("data", UNUSUAL)
def test_anything_unusual_goes_to_the_email_parser(data: bytes) -> None:
    assert _plain_headers(data) is None
