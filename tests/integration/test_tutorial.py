"""docs/plugin-authors.md runs: every ```sh and ```python block, in order, in one shell in a temporary
folder, with a real venv (see author_env) and real pip. ```text, ```toml and the rest are not run.

A Python block runs as `python - <<'EOF'` inside the same shell script, so that the variables the
tutorial exports reach it, exactly as they would reach a reader's Python."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from author_env import author_venv

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "plugin-authors.md"
_BLOCK = re.compile(r"^```(sh|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_SIX = re.compile(r"^## Six commands\n\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def tutorial_script(text: str) -> str:
    parts = ["set -euo pipefail"]
    for language, body in _BLOCK.findall(text):
        if language == "sh":
            parts.append(body)
        else:
            assert "PYEOF" not in body
            parts.append(f"python - <<'PYEOF'\n{body}PYEOF")
    return "\n".join(parts) + "\n"


def test_the_tutorial_promises_six_commands():
    commands = [line for line in _SIX.search(TUTORIAL.read_text()).group(1).splitlines() if line.strip()]

    assert len(commands) <= 6
    assert commands[0].startswith("aperio plugin init ")
    assert commands[-1] == "aperio plugin list"


def test_every_block_of_the_tutorial_runs(tmp_path):
    bin_dir = author_venv(tmp_path / "venv")
    work = tmp_path / "work"
    work.mkdir()
    script = tutorial_script(TUTORIAL.read_text())
    environment = {key: value for key, value in os.environ.items() if not key.startswith("APERIO_")}
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment['PATH']}"

    completed = subprocess.run(
        ["bash", "-c", script], cwd=work, env=environment, capture_output=True, text=True, timeout=900, check=False
    )

    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}"
    assert re.search(r"acme\.hello\s.*enabled\s.*verified", completed.stdout), completed.stdout
    assert "['hello', 'world'] 2" in completed.stdout
    assert "acme-hello 0.1.0: a strict host would accept it once signed" in completed.stdout
    # The tutorial kept the host's state in its own folder.
    assert sorted(p.name for p in work.iterdir()) == ["acme-hello", "keys", "plugins", "state", "trusted-keys"]
