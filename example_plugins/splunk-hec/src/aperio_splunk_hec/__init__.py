"""aperio-splunk-hec: delivers aperio events and findings to a Splunk HTTP Event Collector."""

from ._destination import HEC_SCOPE, SplunkHec

__all__ = ["HEC_SCOPE", "SplunkHec"]
