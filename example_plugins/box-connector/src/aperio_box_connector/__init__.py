"""aperio-box-connector: Box users and enterprise events as aperio envelopes and findings."""

from ._connector import READ_SCOPE, BoxConnector
from ._findings import REMOVE_SHARED_LINK

__all__ = ["READ_SCOPE", "REMOVE_SHARED_LINK", "BoxConnector"]
