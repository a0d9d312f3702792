"""The pipeline: one module per stage, each a plain function from its input type to its output type.

    discover ──► inspect ──► verify ──► admit ──► load ──► register

The stages take what they need as arguments and a frozen `Environment` (`environment.py`), never the
host: `PluginHost` and the worker process both run them (`walk.py` takes one candidate through all
of them). Nothing is imported here, so that importing one stage does not import the others.
"""
