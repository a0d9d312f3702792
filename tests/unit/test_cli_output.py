"""`aperio plugin list` in an 80-column terminal: ids whole, errors on their own lines."""

from __future__ import annotations

import io

from rich.console import Console

from aperio_plugins import PluginState, SignatureStatus
from aperio_plugins._model import Isolation, PluginInfo, PluginKind
from aperio_plugins.cli._output import plugin_errors, plugin_table

LONG_ERROR = "invalid signature: signature 1 (ed25519): no trusted key verifies the signature " * 2
PLUGINS = [
    PluginInfo(
        id="aperio.box-remediation",
        state=PluginState.ENABLED,
        signature_status=SignatureStatus.VERIFIED,
        version="1.0.0",
        kinds=(PluginKind.REMEDIATION,),
        isolation=Isolation.INPROCESS,
    ),
    PluginInfo(
        id="acme.a-rather-long-plugin-id-for-a-connector",
        state=PluginState.FAILED,
        signature_status=SignatureStatus.INVALID,
        version="10.20.30",
        kinds=(PluginKind.CONNECTOR, PluginKind.DESTINATION),
        error=LONG_ERROR,
    ),
]


def test_the_table_fits_80_columns_and_never_splits_an_id():
    out = io.StringIO()
    Console(width=80, file=out, color_system=None).print(plugin_table(PLUGINS))
    lines = out.getvalue().splitlines()

    assert max(len(line) for line in lines) <= 80, out.getvalue()
    for info in PLUGINS:
        assert any(line.startswith(info.id + " ") for line in lines), out.getvalue()
    assert "no trusted key" not in out.getvalue()


def test_errors_come_on_their_own_lines():
    assert plugin_errors(PLUGINS) == [f"acme.a-rather-long-plugin-id-for-a-connector: {LONG_ERROR}"]
