"""`_names.canonicalize_name` stands in for `packaging.utils.canonicalize_name` on the start-up path."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from packaging.utils import canonicalize_name as packaging_canonicalize_name

from aperio_plugins._names import canonicalize_name


@given(st.text(alphabet=st.sampled_from("aZ09-_.Ωß ") | st.characters(), max_size=30))
def test_agrees_with_packaging_on_any_name(name):
    assert canonicalize_name(name) == packaging_canonicalize_name(name)


def test_normalizes_as_pep_503_says():
    assert canonicalize_name("Acme__Box.-Connector") == "acme-box-connector"
