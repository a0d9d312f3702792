# The plugin API version. Bumping the minor keeps every 1.x plugin loadable;
# bumping the major refuses them at load.
__version__ = "1.0.0"
