"""aperio-box-remediation: remediation actions on Box, starting with removing a shared link."""

from ._handler import WRITE_SCOPE, RemoveSharedLink

__all__ = ["WRITE_SCOPE", "RemoveSharedLink"]
