"""The plugin API package: envelopes, exported schemas, the authors' test kit."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

import aperio_hookspecs
from aperio_hookspecs import (
    CredentialNotGrantedError,
    DeadlineExceededError,
    DeliveryBatch,
    Event,
    Finding,
    InvocationContext,
    Resource,
)
from aperio_hookspecs.schema import envelope_schemas
from aperio_hookspecs.testing import make_context

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_committed_json_schemas_match_the_models():
    generated = envelope_schemas()
    committed = {path.name: json.loads(path.read_text()) for path in SCHEMAS.glob("*.schema.json")}
    assert committed == generated, "run: python -m aperio_hookspecs.schema docs/schemas"


def test_api_version_is_the_distribution_version():
    from importlib.metadata import version

    assert version("aperio-hookspecs") == aperio_hookspecs.API_VERSION


def test_envelopes_refuse_unknown_fields_and_wrong_versions():
    base = {"id": "e", "provider": "box", "type": "LOGIN", "occurred_at": "2026-01-01T00:00:00Z"}
    assert Event.model_validate(base).envelope_version == 1
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Event.model_validate({**base, "severity": "high"})
    with pytest.raises(ValidationError, match="envelope_version"):
        Event.model_validate({**base, "envelope_version": 2})


def test_delivery_batch_tells_events_from_findings_by_kind():
    finding = Finding(
        id="f",
        provider="box",
        title="t",
        severity="high",
        resource=Resource(type="file", id="1"),
        detected_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    )
    batch = DeliveryBatch.model_validate_json(DeliveryBatch(destination="siem", envelopes=(finding,)).model_dump_json())
    assert isinstance(batch.envelopes[0], Finding)


def test_make_context_satisfies_the_protocol_and_limits_scopes():
    context = make_context("acme.x", credentials={"box:read": "t0k"}, timeout=5)
    assert isinstance(context, InvocationContext)
    assert context.credentials.get("box:read").secret.get_secret_value() == "t0k"
    with pytest.raises(CredentialNotGrantedError, match="'box:write' not granted"):
        context.credentials.get("box:write")
    context.kv.set("cursor", "7")
    assert context.kv.keys() == ["cursor"]
    context.logger.bind(step=1).info("sync.page", items=3)
    assert context.logger.records[0].fields == {"plugin_id": "acme.x", "step": 1, "items": 3}
    assert 0 < context.remaining() <= 5


def test_context_deadline_is_real():
    context = make_context("acme.x", timeout=0)
    with pytest.raises(DeadlineExceededError, match="ran past its deadline"):
        context.check_deadline()
