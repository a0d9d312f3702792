"""The host side of the process boundary: start a worker, talk to it, restart it, stop it.

`_proxy.WorkerPlugin` is what the host registers in place of the plugin; `_lifecycle` keeps
one worker over time (with `_spawn`, `_sandbox`, `_runtime`, `_stderr`, `_supervisor`);
`_client` and `_channel` are the host's end of the protocol, `_answers`, `_description` and
`_context_ops` what it makes of the worker's messages. The public names are re-exported by
`aperio_plugins.worker`.
"""
