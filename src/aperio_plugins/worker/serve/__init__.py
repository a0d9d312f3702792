"""The worker side of the process boundary: what runs inside `python -m aperio_plugins.worker`.

Containment of the process itself (`_containment`), its logging (`_log`), the plugin walked
through the pipeline's stages (`_bootstrap`), and the protocol's serving end (`_server`,
`_rebuild`, `_remote`). Nothing here imports the host side (`supervise/`) or `PluginHost`.
"""

from ._main import main

__all__ = ["main"]
