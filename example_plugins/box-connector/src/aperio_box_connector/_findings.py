"""The findings the connector raises, one function per rule.

Finding ids name the rule and the resource, not the event, so that the same
condition seen again (in this sync or the next) is the same finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aperio_hookspecs import Event, Finding, Resource, Severity

from ._client import PROVIDER
from ._normalize import text

REMOVE_SHARED_LINK = "box.remove-shared-link"
# Enterprise (admin_logs) names first, then the user-stream names Box also
# emits for the same acts; SHARED_LINK_* covers e.g. SHARED_LINK_SEND.
SHARED_LINK_EVENT_TYPES = frozenset({"SHARE", "ITEM_SHARED_UPDATE", "UPDATE_SHARE_EXPIRATION", "ITEM_SHARED_CREATE"})
SHARED_ITEM_TYPES = frozenset({"file", "folder"})
ADMIN_ROLES = frozenset({"admin", "coadmin"})


def open_shared_link(entry: Mapping[str, Any], event: Event, detected_at: datetime) -> Finding | None:
    """Return a finding when the event left a file or folder with a link anyone can open, else None.

    A link's `effective_access` wins over its `access`: an enterprise setting
    can narrow an "open" link to "company", and such a link is not public.
    """
    if event.type not in SHARED_LINK_EVENT_TYPES and not event.type.startswith("SHARED_LINK_"):
        return None
    resource = event.resource
    if resource is None or resource.type not in SHARED_ITEM_TYPES:
        return None
    link = _shared_link(entry)
    if link is None or (text(link, "effective_access") or text(link, "access")) != "open":
        return None
    password = link.get("is_password_enabled") is True
    exposure = "behind a password" if password else "with no password"
    return Finding(
        id=f"box:open-shared-link:{resource.type}:{resource.id}",
        provider=PROVIDER,
        title=f"Box {resource.type} shared with an open (public) link",
        # A password still gates an open link; the link alone does not.
        severity=Severity.MEDIUM if password else Severity.HIGH,
        resource=resource,
        description=(
            f"{resource.type.capitalize()} {resource.name or resource.id} has a shared link with open access, "
            f"{exposure}: anyone who has the URL can reach it without signing in to Box."
        ),
        detected_at=detected_at,
        remediation_action=REMOVE_SHARED_LINK,
        evidence={
            "event_id": event.id,
            "event_type": event.type,
            "occurred_at": event.occurred_at.isoformat(),
            "shared_by": (event.actor.login or event.actor.id) if event.actor else None,
            "access": text(link, "access"),
            "effective_access": text(link, "effective_access"),
            "password_protected": password,
            "url": text(link, "url"),
        },
    )


def _shared_link(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    # The item as Box recorded it (`source`) first, then the change's details.
    for container in (entry.get("source"), entry.get("additional_details")):
        if isinstance(container, Mapping):
            link = container.get("shared_link")
            if isinstance(link, Mapping):
                return link
    return None


def inactive_admin(user: Mapping[str, Any], detected_at: datetime) -> Finding | None:
    """Return a finding when a deactivated account still holds the admin or co-admin role, else None."""
    user_id = text(user, "id")
    role = text(user, "role")
    if user_id is None or role not in ADMIN_ROLES or text(user, "status") != "inactive":
        return None
    login = text(user, "login")
    title_role = "admin" if role == "admin" else "co-admin"
    return Finding(
        id=f"box:inactive-admin:user:{user_id}",
        provider=PROVIDER,
        title=f"Inactive Box account still holds the {title_role} role",
        severity=Severity.MEDIUM,
        resource=Resource(
            type="user",
            id=user_id,
            name=text(user, "name"),
            attributes={"login": login, "role": role, "status": "inactive"},
        ),
        description=(
            f"{login or user_id} is deactivated but keeps the {title_role} role: reactivating the account, "
            "by mistake or by someone with console access, restores enterprise-wide control at once. "
            "Demote it to a user before leaving it inactive."
        ),
        detected_at=detected_at,
        evidence={"login": login, "role": role, "status": "inactive", "modified_at": text(user, "modified_at")},
    )
