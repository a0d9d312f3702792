# The plugin API version. Bumping the minor keeps every 1.x plugin loadable;
# bumping the major refuses them at load.
# 1.1: the SDK test kit (a pytest plugin with context fixtures, envelope factories).
__version__ = "1.1.0"
