"""The Splunk HEC destination: envelopes out, a receipt of what HEC took back."""

from __future__ import annotations

import socket
import time
from typing import ClassVar

from aperio_hookspecs import (
    DeliveryBatch,
    DeliveryReceipt,
    Destination,
    InvocationContext,
    ProviderError,
    RejectedEnvelope,
)
from aperio_hookspecs.http import HttpTransport, Sleep

from ._config import parse_config
from ._format import Encoded, encode, pack
from ._hec import AUTH_STATUSES, PROVIDER, HecAnswer, HecClient

HEC_SCOPE = "splunk:hec"


class SplunkHec(Destination):
    """Delivers events and findings to a Splunk HTTP Event Collector."""

    name: ClassVar[str] = "splunk-hec"
    description: ClassVar[str] = "Splunk HTTP Event Collector (/services/collector/event)."

    def __init__(self, *, sleep: Sleep = time.sleep) -> None:
        # Injectable so that tests can check a Retry-After is honoured without waiting it out.
        self._sleep = sleep

    def deliver(self, context: InvocationContext, batch: DeliveryBatch) -> DeliveryReceipt:
        """Post the batch in chunks under `max_batch_bytes`; return which envelopes HEC took and which it refused.

        A refused chunk refuses all its envelopes, as not retryable: HEC
        refused what was sent. Envelopes left undelivered because HEC was busy
        or unreachable are rejected as retryable. Raises
        `PluginConfigurationError` for a bad `batch.config`, `CredentialNotGrantedError` without scope
        splunk:hec, `ProviderError` when HEC refuses the token, and when HEC
        is unreachable or failing before it has taken anything (once it has,
        the receipt reports the rest as rejected instead, so that a redelivery
        does not duplicate what was indexed), `DeadlineExceededError` at the deadline.
        """
        config = parse_config(batch.config)
        token = context.credentials.get(HEC_SCOPE).secret.get_secret_value()
        log = context.logger.bind(destination=self.name)
        host = config.host or socket.gethostname()
        # getattr: the key is plugin API 1.2; under a 1.1 host the batch has none.
        key: str | None = getattr(batch, "idempotency_key", None)
        encoded = [encode(envelope, config, host, key) for envelope in batch.envelopes]
        # Too big under this config however often it is redelivered: not retryable.
        rejected = [
            RejectedEnvelope(
                id=item.envelope_id,
                reason=f"{len(item.data)} bytes as a HEC event, over max_batch_bytes",
                retryable=False,
            )
            for item in encoded
            if len(item.data) > config.max_batch_bytes
        ]
        chunks = pack([item for item in encoded if len(item.data) <= config.max_batch_bytes], config.max_batch_bytes)
        transport = HttpTransport(context, provider=PROVIDER, policy=config.retry_policy, sleep=self._sleep)
        client = HecClient(transport, url=config.url, token=token, channel=config.channel, idempotency_key=key)
        log.info("splunk.delivery.started", envelopes=len(encoded), chunks=len(chunks), oversized=len(rejected))

        accepted: list[str] = []
        for position, chunk in enumerate(chunks):
            try:
                answer = client.send(b"".join(item.data for item in chunk))
            except ProviderError as error:
                if error.status in AUTH_STATUSES or not accepted:
                    raise
                unsent = [item for later in chunks[position:] for item in later]
                reason = f"not delivered: {error}"
                # HEC was busy, failing or out of reach after the retries; nothing
                # is wrong with these envelopes, so a later delivery may succeed.
                rejected.extend(RejectedEnvelope(id=item.envelope_id, reason=reason, retryable=True) for item in unsent)
                log.warning("splunk.delivery.interrupted", status=error.status, undelivered=len(unsent))
                break
            if answer.accepted:
                accepted.extend(item.envelope_id for item in chunk)
            else:
                log.warning("splunk.chunk.refused", chunk=position, status=answer.status, code=answer.code)
                rejected.extend(_refusals(chunk, answer))

        log.info("splunk.delivery.finished", accepted=len(accepted), rejected=len(rejected))
        return DeliveryReceipt(destination=batch.destination, accepted=tuple(accepted), rejected=tuple(rejected))


def _refusals(chunk: list[Encoded], answer: HecAnswer) -> list[RejectedEnvelope]:
    """Reject every envelope of a refused chunk, naming the one HEC pointed at when it did.

    None is retryable: HEC refused what was sent (its data, its index, its
    channel, its size), and the same envelopes under the same config would be
    refused again. That holds for the other envelopes of a chunk refused over
    one `invalid-event-number` too: HEC does not say whether it indexed those
    before the bad one, and a refusal such as *Incorrect index* applies to all
    of them, so marking them retryable could duplicate events or loop. Their
    reason names the culprit, for an operator to redeliver them knowingly.
    """
    culprit = answer.invalid_event
    if culprit is None or not 0 <= culprit < len(chunk):
        return [
            RejectedEnvelope(
                id=item.envelope_id, reason=f"HEC refused the request: {answer.describe()}", retryable=False
            )
            for item in chunk
        ]
    culprit_id = chunk[culprit].envelope_id
    return [
        RejectedEnvelope(
            id=item.envelope_id,
            reason=(
                f"HEC refused this event: {answer.describe()}"
                if index == culprit
                else f"HEC refused the request over event {culprit_id}: {answer.describe()}"
            ),
            retryable=False,
        )
        for index, item in enumerate(chunk)
    ]
