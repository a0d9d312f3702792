"""Resolution: the newest installable release, or the pinned one, and why nothing fits."""

from __future__ import annotations

import json

import pytest
from index_builders import index_document, release

from aperio_plugins.errors import ResolutionError
from aperio_plugins.registry._index import parse_index
from aperio_plugins.registry._resolve import download_url, parse_requirement, resolve

SOURCE = "https://registry.invalid/v1/index.json"


def index_with(*releases):
    return parse_index(json.dumps(index_document(*releases)).encode(), SOURCE)


def pick(index, version=None, *, api="1.4.0", pre=False):
    return resolve(index, SOURCE, "acme.box", version, host_api_version=api, pre=pre).release.version


def test_newest_installable_release_is_chosen_over_yanked_incompatible_and_pre_releases():
    index = index_with(
        release("1.0.0"),
        release("1.1.0"),
        release("1.2.0", yanked="leaks tokens"),
        release("1.3.0", api_requirement=">=1.5,<2"),
        release("2.0.0", api_requirement=">=2.0,<3"),
        release("1.4.0rc1"),
    )
    assert pick(index) == "1.1.0"
    assert pick(index, pre=True) == "1.4.0rc1"
    assert pick(index, api="1.5.0") == "1.3.0"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        pytest.param("1.2.0", r"acme.box 1.2.0 cannot be installed: yanked: leaks tokens", id="pinned_yanked"),
        pytest.param(
            "2.0.0",
            r"acme.box 2.0.0 cannot be installed: built for plugin API 2.x .* major versions differ",
            id="pinned_newer_major",
        ),
        pytest.param(
            "9.9.9", r"acme.box 9.9.9 is not in index .* \(versions: 1.0.0, 1.2.0, 2.0.0\)", id="pinned_missing"
        ),
    ],
)
def test_a_pinned_release_is_refused_when_it_must_not_run(version, expected):
    index = index_with(
        release("1.0.0"), release("1.2.0", yanked="leaks tokens"), release("2.0.0", api_requirement=">=2,<3")
    )
    with pytest.raises(ResolutionError, match=expected):
        pick(index, version)


def test_a_pinned_pre_release_needs_no_flag():
    assert pick(index_with(release("1.0.0"), release("1.1.0b1")), "1.1.0b1") == "1.1.0b1"


def test_nothing_installable_lists_each_reason():
    index = index_with(release("1.0.0", yanked="bad"), release("2.0.0", api_requirement=">=2,<3"), release("1.1.0a1"))
    with pytest.raises(ResolutionError) as raised:
        pick(index)
    message = raised.value.message
    assert "no release in index" in message
    assert "2.0.0: built for plugin API 2.x" in message
    assert "1.1.0a1: pre-release (use --pre)" in message
    assert "1.0.0: yanked: bad" in message


def test_an_unknown_id_suggests_close_ones():
    with pytest.raises(ResolutionError, match=r"no plugin 'acme.bx' in index .*; did you mean acme.box\?"):
        resolve(index_with(release()), SOURCE, "acme.bx", None, host_api_version="1.0.0")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("acme.box", ("acme.box", None)), ("acme.box@1.2.0", ("acme.box", "1.2.0"))],
)
def test_requirements_parse(text, expected):
    assert parse_requirement(text) == expected


@pytest.mark.parametrize("text", ["@1.0", "acme.box@", "acme.box@not-a-version"])
def test_bad_requirements_are_refused(text):
    with pytest.raises(ResolutionError):
        parse_requirement(text)


def test_relative_urls_resolve_against_the_index_and_remote_indexes_cannot_name_local_files():
    assert (
        download_url(SOURCE, "wheels/a-1.0-py3-none-any.whl")
        == "https://registry.invalid/v1/wheels/a-1.0-py3-none-any.whl"
    )
    assert download_url("file:///srv/index.json", "a-1.0-py3-none-any.whl") == "file:///srv/a-1.0-py3-none-any.whl"
    with pytest.raises(ResolutionError, match="names a local file"):
        download_url(SOURCE, "file:///etc/passwd")
