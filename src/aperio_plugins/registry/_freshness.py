"""Freshness: refuse an index that was rolled back, frozen, or dated in the future.

Whoever serves an index (a mirror, a CDN, an attacker on the path) can replay an
old copy to hide a yank or a fix. The client remembers, per index source, the
newest `updated_at` and format version it accepted and refuses anything older
(rollback); it refuses an index whose `updated_at` is older than the configured
maximum age (freeze: a server that stopped showing new releases); and it refuses
one dated in the future, which would otherwise raise the remembered mark so high
that every genuine later index looked like a rollback.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from .._state import RegistryMarks, SeenIndex
from ..errors import StaleIndexError
from ._index import PluginIndex

# Clocks of a registry's CI and a host disagree by seconds, rarely minutes.
CLOCK_SKEW = timedelta(minutes=5)


def _age(delta: timedelta) -> str:
    if delta >= timedelta(days=2):
        return f"{delta.days} days"
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} hours" if hours >= 1 else f"{delta.total_seconds():.0f} seconds"


def check_freshness(
    index: PluginIndex, content: bytes, source: str, seen: SeenIndex | None, *, now: datetime, max_age: timedelta
) -> SeenIndex:
    """Return what to remember about `index` once it is accepted.

    Raises `StaleIndexError` saying whether the index was rolled back, frozen or future-dated.
    """
    digest = hashlib.sha256(content).hexdigest()
    stamp = index.updated_at.isoformat()
    if index.updated_at > now + CLOCK_SKEW:
        raise StaleIndexError(
            f"index {source} is dated in the future ({stamp}; now {now.isoformat()}): refused, because accepting it"
            " would make every genuine later index look like a rollback; check the registry's and this host's clocks"
        )
    if seen is not None:
        if index.format_version < seen.format_version:
            raise StaleIndexError(
                f"index {source} was rolled back: format version {index.format_version} after"
                f" {seen.format_version} was already seen"
            )
        if index.updated_at < seen.updated_at:
            raise StaleIndexError(
                f"index {source} was rolled back: updated_at {stamp} is older than {seen.updated_at.isoformat()},"
                " which this host already saw; an old copy is being served (a stale mirror or a replay)"
            )
        if index.updated_at == seen.updated_at and digest != seen.content_sha256:
            raise StaleIndexError(
                f"index {source} changed without a new updated_at ({stamp}): refused, since a client cannot tell"
                " such a change from a replay; the registry must move updated_at forward on every change"
            )
    age = now - index.updated_at
    if age > max_age:
        raise StaleIndexError(
            f"index {source} is frozen: last updated {stamp}, {_age(age)} ago, longer than the allowed"
            f" {_age(max_age)} (APERIO_REGISTRY_MAX_AGE); the registry has stopped publishing, or an old copy"
            " is being served"
        )
    return SeenIndex(index.format_version, index.updated_at, digest)


def accept_fresh_index(
    index: PluginIndex, content: bytes, source: str, store: RegistryMarks, *, now: datetime, max_age: timedelta
) -> None:
    """Check `index` against what `store` remembers for `source`, then remember it.

    Raises `StaleIndexError` (and remembers nothing) when the index is not fresh.
    """
    seen = store.seen_index(source)
    accepted = check_freshness(index, content, source, seen, now=now, max_age=max_age)
    if seen is None or accepted != seen:
        store.record_index(source, accepted)
