"""Prometheus metrics of the agent, and the `--metrics-listen` HTTP endpoint (prometheus-client).

Place in the data flow: the agent counts as events pass (`Metrics.logged_drops`, `.incidents`,
...); what others keep count of — the NFLOG source, the kernel's rule counters, the aggregator's
alert budget, the DNS resolver, the feeds — is read at scrape time through `Metrics.watch`, so it
cannot drift from its source. A private registry per agent keeps tests and several agents in one
process apart. Every name says what it counts; labels hold only bounded values (rule names,
severities, configured sinks, upstreams and feeds, fixed reason words).

    outguard_kernel_drops_total{rule}              packets a blocking rule counted in the kernel
                                                   (audit mode: would have blocked)
    outguard_kernel_logged_total{rule}             of those, sent to NFLOG (within their flow's
                                                   log rate)
    outguard_not_logged_total{rule}                kernel drops - logged: over the log rate
    outguard_logged_drops_total{rule}              blocked packets the monitor received
    outguard_nflog_received_total                  ... all rules together
    outguard_nflog_lost_total                      logged, but lost before the monitor read them
    outguard_nflog_enobufs_total                   socket-buffer overflows
    outguard_incidents_total{class,severity}       incidents opened (packets and DNS queries)
    outguard_attribution_failures_total{reason}    packets no process was found for, by kind
    outguard_alerts_total{sink,outcome}            sent | failed | dropped (a sink's full queue)
    outguard_alerts_suppressed_total{severity}     alerts the per-severity budget held back
    outguard_store_errors_total                    store writes that failed
    outguard_store_lost_incidents_total            incident updates lost to failed writes
    outguard_dns_queries_total{outcome}            cache | upstream | blocked | failed | malformed
    outguard_dns_answers_total{rcode}              answers by response code
    outguard_dns_upstream_failures_total{upstream} (when the resolver counts them per upstream)
    outguard_feed_last_good_timestamp_seconds{feed}  when a feed's copy was last confirmed good
    outguard_feed_age_seconds{feed}                now - that (absent: no good copy yet)
    outguard_feed_consecutive_failures{feed}       failed or refused updates since
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from outguard.feeds.freshness import FeedFreshness
from outguard.nftables.nft_verdict import log_figures

log = logging.getLogger("outguard.monitor")

Families = Callable[[], Iterable[Metric]]


class SourceStats(Protocol):
    received: int
    lost: int
    enobufs: int


class _Watched(Collector):
    """Families computed at scrape time; one that fails is logged and left out."""

    def __init__(self) -> None:
        self.sources: list[Families] = []

    def collect(self) -> Iterator[Metric]:
        for source in list(self.sources):
            try:
                yield from source()
            except Exception as exc:  # a scrape must never fail as a whole
                log.warning("metrics: %s", exc)


def nflog_families(stats: Callable[[], SourceStats | None]) -> Families:
    def families() -> Iterator[Metric]:
        got = stats()
        if got is None:
            return
        yield CounterMetricFamily("outguard_nflog_received", "Blocked packets read from NFLOG",
                                  value=got.received)
        yield CounterMetricFamily("outguard_nflog_lost", "Packets the kernel logged but dropped"
                                  " before outguard read them (sequence gaps)", value=got.lost)
        yield CounterMetricFamily("outguard_nflog_enobufs",
                                  "NFLOG socket buffer overflows (ENOBUFS)", value=got.enobufs)
    return families


def kernel_families(read: Callable[[], Mapping[str, tuple[int, int]]]) -> Families:
    """From the table's named counters (`read`: name → (packets, bytes))."""
    def families() -> Iterator[Metric]:
        figures = log_figures(dict(read()))
        out = [CounterMetricFamily("outguard_kernel_drops", "Packets a blocking rule counted in"
                                   " the kernel (audit mode: would have blocked)", labels=["rule"]),
               CounterMetricFamily("outguard_kernel_logged", "Blocked packets the kernel sent to"
                                   " NFLOG (within their flow's log rate)", labels=["rule"]),
               CounterMetricFamily("outguard_not_logged", "Blocked packets over their flow's log"
                                   " rate: kernel drops minus logged", labels=["rule"])]
        for rule, f in sorted(figures.items()):
            for family, key in zip(out, ("blocked", "logged", "not_logged"), strict=True):
                family.add_metric([rule], f[key])
        yield from out
    return families


def suppressed_families(suppressed: Callable[[], Mapping[str, int]]) -> Families:
    def families() -> Iterator[Metric]:
        family = CounterMetricFamily("outguard_alerts_suppressed", "Alerts the per-severity"
                                     " budget held back", labels=["severity"])
        for severity, n in sorted(suppressed().items()):
            family.add_metric([severity], n)
        yield family
    return families


_DNS_OUTCOMES = {"cache": "hits", "upstream": "upstream", "blocked": "blocked",
                 "failed": "failures", "malformed": "malformed"}


def resolver_families(stats: Callable[[], Any]) -> Families:
    """From `dns.resolver.Stats` (its fields are read by name; ones it lacks are left out)."""
    def families() -> Iterator[Metric]:
        got = stats()
        if got is None:
            return
        queries = CounterMetricFamily("outguard_dns_queries", "DNS queries the resolver"
                                      " handled, by outcome", labels=["outcome"])
        for outcome, attr in _DNS_OUTCOMES.items():
            if isinstance(getattr(got, attr, None), int):
                queries.add_metric([outcome], getattr(got, attr))
        yield queries
        by_rcode = getattr(got, "by_rcode", None)
        if isinstance(by_rcode, dict):
            answers = CounterMetricFamily("outguard_dns_answers", "DNS answers by response code",
                                          labels=["rcode"])
            for rcode, n in sorted(by_rcode.items()):
                answers.add_metric([str(rcode)], n)
            yield answers
        upstreams = getattr(got, "upstream_failures", None)
        if isinstance(upstreams, dict):
            failures = CounterMetricFamily("outguard_dns_upstream_failures", "Queries an upstream"
                                           " server did not answer usefully", labels=["upstream"])
            for upstream, n in sorted(upstreams.items()):
                failures.add_metric([str(upstream)], n)
            yield failures
    return families


def feed_families(feeds: Callable[[], Iterable[FeedFreshness]],
                  clock: Callable[[], float] = time.time) -> Families:
    def families() -> Iterator[Metric]:
        stamp = GaugeMetricFamily("outguard_feed_last_good_timestamp_seconds", "When the feed's"
                                  " copy was last confirmed good (0: never)", labels=["feed"])
        age = GaugeMetricFamily("outguard_feed_age_seconds", "Seconds since the feed's copy was"
                                " last confirmed good", labels=["feed"])
        failures = GaugeMetricFamily("outguard_feed_consecutive_failures", "Failed or refused"
                                     " updates since the last good one", labels=["feed"])
        now = clock()
        for f in feeds():
            last_good = f.last_good_at or 0.0
            stamp.add_metric([f.feed], last_good)
            if last_good > 0:
                age.add_metric([f.feed], max(0.0, now - last_good))
            failures.add_metric([f.feed], f.failures)
        yield from (stamp, age, failures)
    return families


class Metrics:
    def __init__(self, source_stats: Callable[[], SourceStats | None] = lambda: None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.logged_drops = Counter("outguard_logged_drops", "Blocked packets the monitor"
                                    " received from NFLOG, per rule", ["rule"],
                                    registry=self.registry)
        self.incidents = Counter("outguard_incidents", "Incidents opened, per class (signature)",
                                 ["class", "severity"], registry=self.registry)
        self.attribution_failures = Counter(
            "outguard_attribution_failures", "Blocked packets no process could be found for, by"
            " kind (closed, no-socket, exited, orphan, ...)", ["reason"], registry=self.registry)
        self.alerts = Counter("outguard_alerts", "Alerts per sink and outcome",
                              ["sink", "outcome"], registry=self.registry)
        self.store_errors = Counter("outguard_store_errors", "Store writes that failed",
                                    registry=self.registry)
        self.store_lost = Counter("outguard_store_lost_incidents", "Incident updates lost"
                                  " because the store could not write them",
                                  registry=self.registry)
        self._watched = _Watched()
        self.registry.register(self._watched)
        self.watch(nflog_families(source_stats))

    def watch(self, families: Families) -> None:
        """Add families computed at every scrape (kernel counters, resolver, feeds, ...)."""
        self._watched.sources.append(families)

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
