"""Every parser of untrusted input turns bad input into its own typed error, never a traceback.

One property per parser, over random, huge, deep, truncated and non-UTF-8 inputs
(and valid documents cut or mutated): the parser either succeeds or raises the
error type its callers catch. Anything else (RecursionError, KeyError,
UnicodeDecodeError, a bare ValueError) fails the test.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fuzzing import DEEP, FUZZ, MSGPACK_VALUES, hostile, only
from hypothesis import example, given, settings
from hypothesis import strategies as st
from index_builders import index_document

from aperio_plugins._manifest import manifest_sections
from aperio_plugins._signature_file import parse_signature_file
from aperio_plugins._sigstore import SigstoreTrust, TrustedIdentity, verify_artifact_bundle
from aperio_plugins._statement import build_statement, parse_statement
from aperio_plugins._wheel import read_wheel
from aperio_plugins.errors import IndexFormatError, InvalidWheelError, ManifestError, VerificationError
from aperio_plugins.registry._index import parse_index
from aperio_plugins.registry._lockfile import read_lock_file
from aperio_plugins.testing import PluginWheel
from aperio_plugins.worker._protocol import FrameDecoder, ProtocolError, frame, parse_handshake

INDEX = json.dumps(index_document()).encode()
LOCK = json.dumps(
    {
        "format_version": 1,
        "plugins": [
            {
                "plugin_ids": ["acme.box"],
                "distribution": "acme-box",
                "version": "1.0.0",
                "sha256": "a" * 64,
                "source": "https://example.invalid/acme_box-1.0.0-py3-none-any.whl",
            }
        ],
    }
).encode()
MANIFEST = b'manifest_version = 1\n[plugins."acme.box"]\nsummary = "Box"\nkinds = ["connector"]\n'
STATEMENT = build_statement("acme-box", "1.0.0", {"acme_box/__init__.py": "a" * 64})
SIGNATURE_FILE = json.dumps(
    {
        "format": 1,
        "signatures": [
            {"kind": "ed25519", "envelope": {"payload": "e30=", "payloadType": "x", "signatures": [{"sig": "AA=="}]}},
            {"kind": "sigstore", "bundle": {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}},
        ],
    }
).encode()
BUNDLE = json.dumps(
    {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"certificate": {"rawBytes": "AAAA"}, "tlogEntries": []},
        "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": "AAAA"}, "signature": "AAAA"},
    }
).encode()


@FUZZ
@given(hostile(INDEX))
@example(b" " * (32 * 1024 * 1024 + 1))
@example(INDEX)
def test_index(data):
    only(IndexFormatError, lambda d: parse_index(d, "fuzz"), data)


@pytest.fixture(scope="module")
def lock_path(tmp_path_factory):
    return tmp_path_factory.mktemp("lock") / "aperio.lock"


@FUZZ
@given(data=hostile(LOCK))
@example(data=LOCK)
def test_lock_file(lock_path, data):
    lock_path.write_bytes(data)
    only(IndexFormatError, lambda _: read_lock_file(lock_path), data)


@FUZZ
@given(
    st.one_of(
        hostile(MANIFEST),
        st.integers(1, 5000).map(lambda depth: b"a = " + b"[" * depth + b"]" * depth),
        st.integers(1, 5000).map(lambda depth: b"a = " + b"{b = " * depth + b"1" + b"}" * depth),
    )
)
@example(b"a = " + b"[" * 100_000)
@example(b"# " + b"x" * (1 << 20))
@example(MANIFEST)
def test_manifest(data):
    only(ManifestError, lambda d: manifest_sections(d, "fuzz/aperio-plugin.toml"), data)


@FUZZ
@given(hostile(SIGNATURE_FILE))
@example(SIGNATURE_FILE)
@example(b" " * (4 * 1024 * 1024))
def test_signature_file(data):
    only(VerificationError, parse_signature_file, data)


@FUZZ
@given(hostile(STATEMENT))
@example(STATEMENT)
def test_in_toto_statement(data):
    only(VerificationError, parse_statement, data)


SIGSTORE_TRUST = SigstoreTrust((TrustedIdentity("someone@example.invalid", "https://issuer.example.invalid"),), None)


@FUZZ
@given(hostile(BUNDLE))
@example(BUNDLE)
def test_sigstore_bundle(data):
    only(VerificationError, lambda d: verify_artifact_bundle(d, b"artifact", SIGSTORE_TRUST), data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.lists(MSGPACK_VALUES, max_size=3))
@example([b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1"], [])
@example([b"\x00\x00\x01\x00" + b"\x91" * 256], [])
def test_worker_frames(chunks, messages):
    import msgpack

    decoder = FrameDecoder(max_frame_bytes=1 << 16)
    stream = [frame(msgpack.packb(message)) for message in messages] + chunks
    try:
        for chunk in stream:
            decoder.feed(chunk)
    except ProtocolError:
        pass
    only(ProtocolError, parse_handshake, b"".join(chunks))


def _wheel_bytes(replaced: dict[str, bytes] | None = None) -> bytes:
    plugin = PluginWheel("acme-box", plugins={"acme.box": "acme_box"}, files={"acme_box/__init__.py": "x = 1\n"})
    contents = {**plugin.contents(), **(replaced or {})}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return buffer.getvalue()


WHEEL = _wheel_bytes()
WHEEL_NAME = "acme_box-1.0.0-py3-none-any.whl"
MEMBER_CONTENTS = st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode), st.sampled_from(DEEP[:2]))


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wheel") / WHEEL_NAME


@FUZZ
@given(
    st.one_of(
        hostile(WHEEL),
        st.builds(
            lambda metadata, entry_points, record: _wheel_bytes(
                {
                    "acme_box-1.0.0.dist-info/METADATA": metadata,
                    "acme_box-1.0.0.dist-info/entry_points.txt": entry_points,
                    "acme_box-1.0.0.dist-info/RECORD": record,
                }
            ),
            MEMBER_CONTENTS,
            MEMBER_CONTENTS,
            MEMBER_CONTENTS,
        ),
    )
)
@example(WHEEL)
def test_wheel(wheel_path, data):
    wheel_path.write_bytes(data)
    only(InvalidWheelError, lambda _: read_wheel(wheel_path), data)


@pytest.fixture(scope="module")
def parsers(tmp_path_factory) -> dict[str, tuple[Callable[[bytes], Any], type[Exception]]]:
    folder = tmp_path_factory.mktemp("deep")

    def through_file(name: str, parse: Callable[[Path], Any]) -> Callable[[bytes], Any]:
        def parse_bytes(data: bytes) -> Any:
            (folder / name).write_bytes(data)
            return parse(folder / name)

        return parse_bytes

    return {
        "index": (lambda d: parse_index(d, "deep"), IndexFormatError),
        "lock_file": (through_file("aperio.lock", read_lock_file), IndexFormatError),
        "manifest": (lambda d: manifest_sections(d, "deep"), ManifestError),
        "signature_file": (parse_signature_file, VerificationError),
        "statement": (parse_statement, VerificationError),
        "sigstore_bundle": (lambda d: verify_artifact_bundle(d, b"artifact", SIGSTORE_TRUST), VerificationError),
        "wheel": (through_file(WHEEL_NAME, read_wheel), InvalidWheelError),
    }


@pytest.mark.parametrize(
    "data",
    [*DEEP, b"", b"\xff\xfe\x00", b"\x80" * 10, b'"\\ud800"', b"1" * 5000, b"{" + b'"a":1,' * 50_000 + b'"a":1}'],
    ids=[
        "deep_list",
        "deep_object",
        "depth_70_list",
        "depth_70_object",
        "empty",
        "bom",
        "latin1",
        "lone_surrogate",
        "huge_int",
        "many_keys",
    ],
)
@pytest.mark.parametrize(
    "parser", ["index", "lock_file", "manifest", "signature_file", "statement", "sigstore_bundle", "wheel"]
)
def test_every_parser_refuses_deep_and_odd_documents_with_its_own_error(parsers, parser, data):
    parse, error = parsers[parser]
    with pytest.raises(error):
        parse(data)
