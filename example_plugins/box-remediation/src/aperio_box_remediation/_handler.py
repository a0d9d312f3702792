"""The `box.remove-shared-link` remediation: turn a public (or any) shared link off."""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

from aperio_hookspecs import (
    ActionDefinition,
    InvocationContext,
    RemediationHandler,
    RemediationRequest,
    RemediationResult,
    RemediationStatus,
)
from aperio_hookspecs.http import HttpTransport, Sleep

from ._client import COLLECTIONS, PROVIDER, BoxItems, ItemUnavailable
from ._config import check_parameters, parse_config

# The dry run uses the write scope too: Box reports `shared_link: null` to a
# read-only token, so a read token would call every item NOT_NEEDED, and a
# dry run should prove that the real run's credential works.
WRITE_SCOPE = "box:write"
# Box ids are decimal strings; anything else must never reach a URL path.
_BOX_ID = re.compile(r"^[0-9]{1,32}$")
# The request's resource says everything this action needs to know.
PARAMETERS: frozenset[str] = frozenset()


class RemoveSharedLink(RemediationHandler):
    """Removes the shared link of a Box file or folder."""

    action: ClassVar[ActionDefinition] = ActionDefinition(
        name="box.remove-shared-link",
        provider=PROVIDER,
        title="Remove a Box shared link",
        description=(
            "Removes the shared link of a file or folder (PUT with shared_link: null). Anyone holding the URL "
            "loses access; collaborators keep theirs. A removed link cannot be restored with the same URL."
        ),
        resource_types=tuple(COLLECTIONS),
        destructive=True,
        supports_dry_run=True,
    )

    def __init__(self, *, sleep: Sleep = time.sleep) -> None:
        # Injectable so that tests can check a Retry-After is honoured without waiting it out.
        self._sleep = sleep

    def remediate(self, context: InvocationContext, request: RemediationRequest) -> RemediationResult:
        """Remove the link (or, with `dry_run`, only read it) and return what happened.

        Returns FAILED for a request this action cannot serve and for an item
        Box reports missing (404) or out of reach (403); NOT_NEEDED when the
        item has no shared link. Raises `PluginConfigurationError` for a bad
        `request.config` or any parameter (this action takes none),
        `CredentialNotGrantedError` without scope box:write, `ProviderError`
        for 401, 429 and 5xx after retries, `DeadlineExceededError` at the deadline.
        """
        refusal = self._refusal(request)
        if refusal is not None:
            return self._result(request, RemediationStatus.FAILED, refusal)
        settings = parse_config(request.config)
        check_parameters(request.parameters, action=self.action.name, known=PARAMETERS)
        token = context.credentials.get(WRITE_SCOPE).secret.get_secret_value()
        kind, item_id = request.resource.type, request.resource.id
        log = context.logger.bind(action=self.action.name, request_id=request.id, item=f"{kind}:{item_id}")
        transport = HttpTransport(context, provider=PROVIDER, policy=settings.retry_policy, sleep=self._sleep)
        items = BoxItems(transport, base_url=settings.base_url, token=token)
        log.info("box.remediation.started", dry_run=request.dry_run)

        try:
            link = items.shared_link(kind, item_id)
            if link is None:
                result = self._result(request, RemediationStatus.NOT_NEEDED, f"{kind} {item_id} has no shared link")
            elif request.dry_run:
                result = self._result(
                    request,
                    RemediationStatus.DRY_RUN,
                    f"would remove the {_access(link)} shared link {link.get('url')} from {kind} {item_id}",
                    _change(link),
                )
            else:
                result = self._remove(items, request, link)
        except ItemUnavailable as unavailable:
            missing = unavailable.status == 404
            reason = "not found (deleted, or not visible to this token)" if missing else "not permitted"
            result = self._result(request, RemediationStatus.FAILED, f"{kind} {item_id} {reason}: {unavailable.detail}")
        log.info("box.remediation.finished", status=result.status.value, detail=result.detail)
        return result

    def _remove(self, items: BoxItems, request: RemediationRequest, link: dict[str, Any]) -> RemediationResult:
        kind, item_id = request.resource.type, request.resource.id
        after = items.remove_shared_link(kind, item_id)
        if after is not None:
            # An enterprise policy can force a link back on; say so rather than claim success.
            detail = f"Box still reports a shared link ({_access(after)}) on {kind} {item_id}"
            return self._result(request, RemediationStatus.FAILED, detail)
        return self._result(
            request,
            RemediationStatus.SUCCEEDED,
            f"removed the {_access(link)} shared link {link.get('url')} from {kind} {item_id}",
            _change(link),
        )

    def _refusal(self, request: RemediationRequest) -> str | None:
        if request.action != self.action.name:
            return f"this handler performs {self.action.name!r}, not {request.action!r}"
        if request.resource.type not in COLLECTIONS:
            return f"resource type {request.resource.type!r} has no shared link; expected file or folder"
        if not _BOX_ID.match(request.resource.id):
            return f"resource id {request.resource.id!r} is not a Box id"
        return None

    def _result(
        self, request: RemediationRequest, status: RemediationStatus, detail: str, changes: dict[str, Any] | None = None
    ) -> RemediationResult:
        return RemediationResult(
            request_id=request.id, action=self.action.name, status=status, detail=detail, changes=changes or {}
        )


def _access(link: dict[str, Any]) -> str:
    access = link.get("effective_access") or link.get("access")
    return str(access) if access else "unknown-access"


def _change(link: dict[str, Any]) -> dict[str, Any]:
    keep = ("url", "access", "effective_access", "is_password_enabled")
    return {"shared_link": {"from": {key: link.get(key) for key in keep}, "to": None}}
