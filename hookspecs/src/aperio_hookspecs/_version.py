# The plugin API version. Bumping the minor keeps every 1.x plugin loadable;
# bumping the major refuses them at load.
# 1.1: the SDK test kit (pytest plugin, envelope factories) and the HTTP helper (extra `http`).
__version__ = "1.1.0"
