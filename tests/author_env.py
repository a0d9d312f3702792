"""A plugin author's virtual environment, made quickly: a real venv whose site-packages also reads this
test environment's (the host, the SDK, pytest), so that `pip install -e` of the author's project lands in
the new venv only and never in the environment the rest of the suite runs in."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def author_venv(directory: Path) -> Path:
    """Create the venv at `directory`; return its bin directory (python, and aperio via PATH)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    purelib = subprocess.run(
        [str(directory / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    # addsitedir, not a plain path line: the parent's own .pth files (editable installs) must run too.
    (Path(purelib) / "_parent_environment.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    bin_dir = directory / "bin"
    # `aperio` and `pip` of the parent, run by this venv's interpreter.
    for script in ("aperio", "pip"):
        source = Path(sys.executable).with_name(script).read_text().splitlines()
        (bin_dir / script).write_text("\n".join([f"#!{bin_dir / 'python'}", *source[1:]]) + "\n")
        (bin_dir / script).chmod(0o755)
    return bin_dir
