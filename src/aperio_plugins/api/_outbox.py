"""The outbox in the operator API: `POST /api/v1/destinations/{destination}/deliver` (`plugins:execute`)
queues a batch and answers 202 with its idempotency key once it is durable; `GET /api/v1/outbox`
(`plugins:read`) shows the counts and dead letters; `/metrics` gets the outbox's gauges and the
dispatcher's counters. The dispatcher itself runs in the app's lifespan (`create_app(dispatcher=…)`).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, which name local aliases.

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from .._dispatch import Dispatcher, enqueue, outbox_of
from .._outbox import status_document
from ..errors import AperioError, DeliveryError
from ._metrics import ApiMetrics
from ._models import ErrorBody
from ._principal import Permission, Principal
from ._routes import ApiContext, _requirement


class DeliverBody(BaseModel):
    """A batch for one destination: the envelopes (events and findings) and the destination's config."""

    model_config = ConfigDict(extra="forbid")
    envelopes: list[dict[str, Any]] = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)


class Queued(BaseModel):
    destination: str
    batch_id: str = Field(description="The batch's idempotency key, the same on every redelivery.")
    envelopes: int


def build_outbox_router(context: ApiContext, store: object) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["outbox"])
    executor = Annotated[Principal, Depends(_requirement(context, Permission.EXECUTE))]
    reader = Annotated[Principal, Depends(_requirement(context, Permission.READ))]
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody, "description": "no destination of that name on this host"},
        422: {"model": ErrorBody, "description": "malformed envelopes"},
        503: {"model": ErrorBody, "description": "the state store did not take the batch"},
    }

    @router.post("/destinations/{destination}/deliver", status_code=202, response_model=Queued, responses=errors)
    def deliver(destination: str, body: DeliverBody, principal: executor) -> Any:
        """Queue a batch in the durable outbox; the dispatcher delivers it at least once."""
        if destination not in context.host.destinations:
            context.audit("api.outbox.deliver", principal, destination=destination, outcome="404", reason="unknown")
            raise HTTPException(404, detail=f"no destination named {destination!r} on this host")
        try:
            outbox = outbox_of(store)
            key = enqueue(outbox, context.host.destinations, destination, body.envelopes, body.config)
        except DeliveryError as exc:
            context.audit("api.outbox.deliver", principal, destination=destination, outcome="422", reason=str(exc))
            return JSONResponse(status_code=422, content={"detail": str(exc)})
        except AperioError as exc:
            context.audit("api.outbox.deliver", principal, destination=destination, outcome="503", reason=str(exc))
            return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "5"})
        context.audit("api.outbox.deliver", principal, destination=destination, outcome="ok", batch_id=key)
        return Queued(destination=destination, batch_id=key, envelopes=len(body.envelopes))

    @router.get("/outbox", responses=errors)
    def status(principal: reader) -> dict[str, Any]:
        """Batches and events per destination and state, and the dead letters with their reasons."""
        return status_document(outbox_of(store))

    return router


class _OutboxCollector(Collector):
    def __init__(self, store: object, dispatcher: Dispatcher | None) -> None:
        self.store = store
        self.dispatcher = dispatcher

    def collect(self) -> Iterable[Metric]:
        queued = GaugeMetricFamily(
            "aperio_outbox_events", "Events in the outbox by destination and state.", labels=["destination", "state"]
        )
        try:
            for count in outbox_of(self.store).outbox_counts():
                queued.add_metric([count.destination, count.state.value], count.events)
        except AperioError:
            pass  # the store is down: /readyz says so; the scrape still answers
        metrics: list[Metric] = [queued]
        if self.dispatcher is not None:
            c = self.dispatcher.counters
            for name, value, text in (
                ("delivered", c.delivered, "Batches this host delivered."),
                ("retried", c.retried, "Deliveries this host put back for a retry."),
                ("dead_lettered", c.dead_lettered, "Batches this host dead-lettered."),
            ):
                counter = CounterMetricFamily(f"aperio_outbox_{name}", text)
                counter.add_metric([], value)
                metrics.append(counter)
        return metrics


def register_outbox_metrics(metrics: ApiMetrics, store: object, dispatcher: Dispatcher | None) -> None:
    metrics.registry.register(_OutboxCollector(store, dispatcher))
