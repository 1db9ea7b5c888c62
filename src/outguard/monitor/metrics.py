"""Prometheus metrics of the agent, and the `--metrics-listen` HTTP endpoint (prometheus-client).

Place in the data flow: the agent counts as events pass (`Metrics.packet`, `.incident`, ...);
the NFLOG source's own loss counters are read at scrape time (a collector over its `stats`), so
they cannot drift from what the source counted. A private registry per agent keeps tests and
several agents in one process apart.

    outguard_drops_total{rule}                     blocked packets seen, per rule
    outguard_incidents_total{class,severity}       incidents opened, per signature
    outguard_nflog_lost_total                      packets the kernel dropped before we read them
    outguard_nflog_enobufs_total                   socket-buffer overflows
    outguard_attribution_failures_total{reason}    packets no process could be found for
    outguard_alerts_total{sink,outcome}            sent | failed | dropped
    outguard_store_errors_total                    batches the store refused
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class SourceStats(Protocol):
    received: int
    lost: int
    enobufs: int


class _SourceCollector(Collector):
    def __init__(self, stats: Callable[[], SourceStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self._stats()
        if stats is None:
            return
        yield CounterMetricFamily("outguard_nflog_received", "Blocked packets read from NFLOG",
                                  value=stats.received)
        yield CounterMetricFamily("outguard_nflog_lost",
                                  "Packets the kernel logged but dropped before outguard read them"
                                  " (sequence gaps)", value=stats.lost)
        yield CounterMetricFamily("outguard_nflog_enobufs",
                                  "NFLOG socket buffer overflows (ENOBUFS)", value=stats.enobufs)


class Metrics:
    def __init__(self, source_stats: Callable[[], SourceStats | None] = lambda: None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.drops = Counter("outguard_drops", "Blocked packets seen, per rule", ["rule"],
                             registry=self.registry)
        self.incidents = Counter("outguard_incidents", "Incidents opened, per class (signature)",
                                 ["class", "severity"], registry=self.registry)
        self.attribution_failures = Counter(
            "outguard_attribution_failures", "Blocked packets no process could be found for",
            ["reason"], registry=self.registry)
        self.alerts = Counter("outguard_alerts", "Alerts per sink and outcome",
                              ["sink", "outcome"], registry=self.registry)
        self.store_errors = Counter("outguard_store_errors", "Store batches that failed",
                                    registry=self.registry)
        self.registry.register(_SourceCollector(source_stats))

    def alert(self, sink: str, outcome: str) -> None:
        self.alerts.labels(sink, outcome).inc()

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 if absent): for tests and the CLI."""
        got = self.registry.get_sample_value(name, labels)
        return got if got is not None else 0.0


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9108`, `[::1]:9108` or `:9108` (all addresses) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9108)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class MetricsServer:
    """The endpoint on its own thread (prometheus-client's WSGI server)."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        host, port = parse_listen(listen)
        started: Any = start_http_server(port, host, registry=metrics.registry)
        self._server: WSGIServer = started[0]
        self._thread = started[1]

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
