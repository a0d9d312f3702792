from __future__ import annotations

from pathlib import Path

import pytest

from aperio_plugins import ConfigurationError, HostSettings, TrustMode


def test_defaults_follow_the_design(monkeypatch):
    for name in ("PLUGINS_DIR", "PLUGIN_TRUST_MODE", "STATE_DIR", "ENVIRONMENT"):
        monkeypatch.delenv(f"APERIO_{name}", raising=False)
    settings = HostSettings.from_environment()
    assert settings.plugin_trust_mode is TrustMode.STRICT
    assert settings.plugins_dir == Path("~/.aperio/plugins").expanduser()
    assert settings.state_dir == Path("~/.aperio/state").expanduser()
    assert settings.environment == "production"


def test_environment_variables_are_read(monkeypatch, tmp_path):
    monkeypatch.setenv("APERIO_PLUGINS_DIR", str(tmp_path / "p"))
    monkeypatch.setenv("APERIO_PLUGIN_TRUST_MODE", "warn")
    monkeypatch.setenv("APERIO_ENVIRONMENT", " Development ")
    settings = HostSettings.from_environment()
    assert settings.plugins_dir == tmp_path / "p"
    assert settings.plugin_trust_mode is TrustMode.WARN
    assert settings.is_development


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "APERIO_PLUGIN_TRUST_MODE",
            "strictest",
            "APERIO_PLUGIN_TRUST_MODE='strictest': Input should be 'strict', 'warn' or 'disabled'",
        ),
        ("APERIO_ENVIRONMENT", "  ", "APERIO_ENVIRONMENT='  '"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        HostSettings.from_environment()
    assert message in raised.value.message


def test_arguments_win_over_the_environment_and_names_match_in_any_case(monkeypatch, tmp_path):
    # As pydantic-settings read them: HostSettings reads the variables itself now.
    monkeypatch.setenv("APERIO_PLUGIN_TRUST_MODE", "disabled")
    monkeypatch.setenv("aperio_state_dir", str(tmp_path / "s"))
    monkeypatch.setenv("APERIO_REGISTRY_INSECURE_HOSTS", " a.test, b.test:5000 ,")
    settings = HostSettings(plugin_trust_mode="warn")
    assert settings.plugin_trust_mode is TrustMode.WARN
    assert settings.state_dir == tmp_path / "s"
    assert settings.registry_insecure_hosts == ("a.test", "b.test:5000")
    assert HostSettings.from_environment().plugin_trust_mode is TrustMode.DISABLED


def test_an_unknown_argument_is_refused_and_an_unknown_variable_ignored(monkeypatch):
    monkeypatch.setenv("APERIO_NOT_A_SETTING", "1")
    HostSettings.from_environment()
    with pytest.raises(ConfigurationError, match="APERIO_NOT_A_SETTING"):
        HostSettings.from_environment(not_a_setting=1)
