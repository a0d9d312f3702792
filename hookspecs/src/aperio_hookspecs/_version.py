# The plugin API version. Bumping the minor keeps every 1.x plugin loadable;
# bumping the major refuses them at load.
# 1.1: the SDK test kit (a pytest plugin with context fixtures, envelope factories).
# 1.2: `DeliveryBatch.idempotency_key`, set by the host's outbox.
# 1.2.1: no API change; the models (envelopes, context, extension classes) are imported on first use.
__version__ = "1.2.1"
