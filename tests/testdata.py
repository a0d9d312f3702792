"""Where the suite's real Sigstore and PyPI material lives: tests/data (see tests/data/ORIGINS)."""

from __future__ import annotations

from pathlib import Path

TESTDATA = Path(__file__).resolve().parent / "data"
PRODUCTION_ROOT = TESTDATA / "sigstore-trust-root" / "production-trusted_root.json"
RFC8785_WHEEL = TESTDATA / "sigstore-python" / "rfc8785-0.1.2-py3-none-any.whl"
RFC8785_BUNDLE = TESTDATA / "sigstore-python" / "rfc8785-0.1.2-py3-none-any.whl.sigstore.json"
RFC8785_IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
ATTESTATIONS = TESTDATA / "pypi-attestations"
