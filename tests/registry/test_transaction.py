"""The plugins directory changes all or nothing: on failure, on interruption, and after a crash."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tree_snapshot import run_killed_after_renames, snapshot

from aperio_plugins import HostSettings
from aperio_plugins._preflight import JOURNAL_NAME, control_dir
from aperio_plugins._trust import Severity, load_trust_store
from aperio_plugins.errors import InstallError
from aperio_plugins.registry._transaction import PluginsDirectoryLock


@pytest.fixture
def populated(tmp_path):
    plugins = tmp_path / "plugins"
    for name in ("acme_box", "acme_box-1.0.dist-info", "other_pkg"):
        (plugins / name).mkdir(parents=True)
        (plugins / name / "file.txt").write_text(f"{name} old\n")
    return plugins


def stage_new_release(lock, transaction):
    new = transaction.work_dir / "staging"
    for name in ("acme_box", "acme_box-2.0.dist-info"):
        (new / name).mkdir(parents=True)
        (new / name / "file.txt").write_text(f"{name} new\n")
    plugins = lock.plugins_dir
    for name in ("acme_box-1.0.dist-info", "acme_box"):
        transaction.move(plugins / name, transaction.work_dir / "previous" / name)
    for name in ("acme_box", "acme_box-2.0.dist-info"):
        transaction.move(new / name, plugins / name)


def crash_midway(plugins_dir: Path, renames: int):
    """Replace the release in a child process that is SIGKILLed right after its `renames`-th rename."""
    return run_killed_after_renames(
        renames,
        f"""
        import pathlib, sys
        sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(Path(__file__).parents[1])!r}]
        from test_transaction import stage_new_release
        from aperio_plugins.registry._transaction import PluginsDirectoryLock
        with PluginsDirectoryLock(pathlib.Path({str(plugins_dir)!r})) as lock:
            with lock.transaction() as transaction:
                stage_new_release(lock, transaction)
        """,
    )


def test_a_committed_transaction_replaces_the_release_and_leaves_no_work_behind(populated):
    with PluginsDirectoryLock(populated) as lock, lock.transaction() as transaction:
        stage_new_release(lock, transaction)
    after = snapshot(populated)
    assert after == {
        "acme_box/file.txt": hashlib.sha256(b"acme_box new\n").hexdigest(),
        "acme_box-2.0.dist-info/file.txt": hashlib.sha256(b"acme_box-2.0.dist-info new\n").hexdigest(),
        "other_pkg/file.txt": hashlib.sha256(b"other_pkg old\n").hexdigest(),
    }
    assert list(control_dir(populated).glob("work-*")) == []


def replace_then_fail(lock, error: BaseException | None = None):
    with lock.transaction() as transaction:
        stage_new_release(lock, transaction)
        if error is not None:
            raise error
        transaction.move(transaction.work_dir / "does-not-exist", lock.plugins_dir / "late_entry")


def test_a_move_that_fails_midway_undoes_the_ones_before_it(populated):
    before = snapshot(populated)
    with PluginsDirectoryLock(populated) as lock, pytest.raises(FileNotFoundError):
        replace_then_fail(lock)
    assert not (control_dir(populated) / JOURNAL_NAME).exists()
    assert snapshot(populated) == before


def test_an_exception_before_the_moves_changes_nothing(populated):
    before = snapshot(populated)
    with PluginsDirectoryLock(populated) as lock, pytest.raises(KeyboardInterrupt):
        replace_then_fail(lock, KeyboardInterrupt())
    assert snapshot(populated) == before


@pytest.mark.parametrize("killed_at_rename", [1, 2, 3, 4])
def test_a_process_killed_midway_is_rolled_back_by_the_next_operation(populated, killed_at_rename):
    """SIGKILL after N renames (of four): the next lock holder finds the journal and undoes them."""
    before = snapshot(populated)
    completed = crash_midway(populated, killed_at_rename)
    assert completed.returncode == -signal.SIGKILL, completed.stderr
    assert (control_dir(populated) / JOURNAL_NAME).exists()
    assert snapshot(populated) != before
    with PluginsDirectoryLock(populated) as lock:
        assert not (control_dir(populated) / JOURNAL_NAME).exists()
        assert lock.recover() is False
    assert snapshot(populated) == before
    assert list(control_dir(populated).glob("work-*")) == []


def test_a_second_process_cannot_change_the_directory_at_the_same_time(populated):
    with PluginsDirectoryLock(populated):
        script = (
            "import pathlib; from aperio_plugins.registry._transaction import PluginsDirectoryLock\n"
            f"PluginsDirectoryLock(pathlib.Path({str(populated)!r})).__enter__()"
        )
        completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert completed.returncode != 0
    assert "is being changed by another aperio process" in completed.stderr


def test_an_unreadable_journal_is_reported_not_guessed(populated):
    control_dir(populated).mkdir()
    (control_dir(populated) / JOURNAL_NAME).write_text("{garbage")
    with pytest.raises(InstallError, match=r"journal\.json is unreadable .* check it by hand"):
        PluginsDirectoryLock(populated).__enter__()
    assert os.path.exists(control_dir(populated) / JOURNAL_NAME)


def test_an_interrupted_change_is_a_preflight_error_until_it_is_rolled_back(populated, tmp_path):
    settings = HostSettings(
        plugins_dir=populated,
        state_dir=tmp_path / "state",
        plugin_trusted_keys_dir=tmp_path / "keys",
        plugin_trusted_identities=tmp_path / "identities.toml",
    )
    completed = crash_midway(populated, 2)
    assert completed.returncode == -signal.SIGKILL
    problems = [p for p in load_trust_store(settings).problems if "was interrupted" in p.message]
    assert [p.severity for p in problems] == [Severity.ERROR]
    with PluginsDirectoryLock(populated):
        pass
    assert not [p for p in load_trust_store(settings).problems if "was interrupted" in p.message]
