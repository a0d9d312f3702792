"""`check_result` skips a second validation only for a result the host validated into exactly the expected type."""

from __future__ import annotations

import pytest

from aperio_hookspecs import SyncRequest, SyncResult
from aperio_plugins._invoke import InvalidResultError, check_result, operation_for

REQUEST = SyncRequest(connector="box")


class LaxResult(SyncResult):
    """A subclass built without validation: what a proxy bug could hand back."""


def test_a_host_validated_result_of_the_exact_type_is_returned_as_it_is():
    result = SyncResult(connector="box")

    assert check_result(REQUEST, operation_for(REQUEST), result, validated=True) is result


@pytest.mark.parametrize(
    "result",
    [
        {"connector": "box", "events": "not a list"},
        LaxResult.model_construct(connector="box", events="not a list"),
        None,
    ],
    ids=["mapping", "unvalidated_subclass", "none"],
)
# Dumping the unvalidated subclass makes pydantic warn about its bad field before validation refuses it.
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
def test_anything_else_is_validated_even_when_the_host_says_it_validated(result):
    with pytest.raises(InvalidResultError):
        check_result(REQUEST, operation_for(REQUEST), result, validated=True)


def test_a_validated_result_for_another_connector_is_still_refused():
    with pytest.raises(InvalidResultError, match="for connector 'other', not 'box'"):
        check_result(REQUEST, operation_for(REQUEST), SyncResult(connector="other"), validated=True)
