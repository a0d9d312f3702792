"""The SDK's pytest plugin (loaded through its `pytest11` entry point) and envelope factories."""

from __future__ import annotations

import pydantic
import pytest

from aperio_hookspecs import CredentialNotGrantedError, DeadlineExceededError, Severity
from aperio_hookspecs.testing import make_delivery_batch, make_event, make_finding


@pytest.mark.aperio_plugin("acme.kit", credentials={"kit:read": "s3cret"}, timeout=5.0)
def test_the_marker_sets_id_credentials_and_deadline(aperio_context, aperio_logs, aperio_kv):
    aperio_context.logger.bind(step="one").info("kit.started", items=2)
    aperio_context.kv.set("cursor", "2")

    assert aperio_context.plugin_id == "acme.kit"
    assert aperio_context.credentials.get("kit:read").secret.get_secret_value() == "s3cret"
    with pytest.raises(CredentialNotGrantedError):
        aperio_context.credentials.get("kit:write")
    assert 0 < aperio_context.remaining() <= 5.0
    assert [(r.event, r.fields) for r in aperio_logs] == [
        ("kit.started", {"plugin_id": "acme.kit", "step": "one", "items": 2})
    ]
    assert aperio_kv.get("cursor") == "2"


def test_without_the_marker_the_context_grants_nothing(aperio_context):
    assert aperio_context.plugin_id == "test.plugin"
    with pytest.raises(CredentialNotGrantedError):
        aperio_context.credentials.get("anything")


@pytest.mark.aperio_plugin("acme.kit", timeout=0.0)
def test_a_past_deadline_is_real(aperio_context):
    with pytest.raises(DeadlineExceededError):
        aperio_context.check_deadline()


def test_further_contexts_share_the_kv_store(make_aperio_context, aperio_kv):
    make_aperio_context("acme.one").kv.set("k", "v")

    assert aperio_kv.get("k") == "v"
    assert make_aperio_context("acme.two", kv=None).kv is not aperio_kv


def test_envelope_factories_fill_required_fields_and_still_validate(aperio_envelopes):
    event = aperio_envelopes.event(type="user.login")
    finding = aperio_envelopes.finding(severity=Severity.HIGH)
    batch = aperio_envelopes.delivery_batch("siem", [event, finding])

    assert (event.kind, event.type, event.occurred_at.tzinfo is not None) == ("event", "user.login", True)
    assert (finding.severity, finding.resource.type) == (Severity.HIGH, "file")
    assert [e.id for e in batch.envelopes] == [event.id, finding.id]
    assert aperio_envelopes.sync_request("box", cursor="5").cursor == "5"
    assert aperio_envelopes.remediation_request("box.unshare", dry_run=True).dry_run is True
    assert make_event().id != make_event().id
    with pytest.raises(pydantic.ValidationError):
        make_finding(unknown_field=1)
    assert make_delivery_batch("siem").envelopes[0].kind == "event"
