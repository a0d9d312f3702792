"""Prometheus metrics of one host, in a registry of their own (no process-wide collector).

Calls and their latency are counted where the API runs a plugin (`POST /plugins/{id}/run`);
failures, breaker state and worker restarts are read from the host's snapshots at scrape time, so
they include the failures of hook calls the host application made itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._host import PluginHost
from .._model import PluginState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BREAKER_STATES = ("closed", "open", "half_open")


class _HostCollector(Collector):
    def __init__(self, host: PluginHost) -> None:
        self.host = host

    def collect(self) -> Iterable[Metric]:
        failures = CounterMetricFamily(
            "aperio_plugin_failures", "Calls of the plugin that failed (hooks and runs).", labels=["plugin_id"]
        )
        restarts = CounterMetricFamily(
            "aperio_plugin_worker_restarts", "Restarts of the plugin's worker process.", labels=["plugin_id"]
        )
        breaker = GaugeMetricFamily(
            "aperio_plugin_breaker_state", "1 for the circuit breaker's current state.", labels=["plugin_id", "state"]
        )
        state = GaugeMetricFamily(
            "aperio_plugin_state", "1 for the plugin's lifecycle state.", labels=["plugin_id", "state"]
        )
        for info in self.host.plugins():
            if info.state is PluginState.FAILED and info.distribution is None:
                continue  # a shadowed duplicate or unreadable entry: no plugin to measure
            failures.add_metric([info.id], info.call_failures)
            restarts.add_metric([info.id], info.worker_restarts)
            for name in _BREAKER_STATES:
                breaker.add_metric([info.id, name], 1.0 if info.breaker_state == name else 0.0)
            state.add_metric([info.id, info.state.value], 1.0)
        return [failures, restarts, breaker, state]


class ApiMetrics:
    """The metrics of one API instance; `render()` is the `/metrics` body."""

    def __init__(self, host: PluginHost) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.calls = Counter(
            "aperio_plugin_calls",
            "Runs of the plugin through the API, by outcome.",
            ["plugin_id", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aperio_plugin_call_duration_seconds",
            "Duration of runs of the plugin through the API.",
            ["plugin_id"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.registry.register(_HostCollector(host))

    def observe_run(self, plugin_id: str, seconds: float, outcome: str) -> None:
        self.calls.labels(plugin_id, outcome).inc()
        self.latency.labels(plugin_id).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
