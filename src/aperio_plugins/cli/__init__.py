"""The `aperio` command line. The one place that prints and picks exit codes."""

from ._main import main

__all__ = ["main"]
