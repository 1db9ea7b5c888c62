"""packaging/grafana/outguard.json against what the agent exports: every metric a query names
must be a sample name the agent's registry produces (a renamed metric would leave a panel
silently empty), and every `by (...)` label one that metric has.

The registry is built as `service.runner` builds it: `monitor.metrics.Metrics` and every family
the agent watches (kernel counters, alert budget, resolver, feeds), each given one value so its
samples and labels show. A planted query proves the check can fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from outguard.feeds.freshness import FeedFreshness
from outguard.monitor.metrics import (
    Metrics,
    feed_families,
    kernel_families,
    resolver_families,
    suppressed_families,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "packaging" / "grafana" / "outguard.json"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan"}


def exported() -> dict[str, set[str]]:
    """Sample name → its label names, for everything the agent's registry exports."""
    m = Metrics(lambda: SimpleNamespace(received=1, lost=0, enobufs=0))
    m.watch(kernel_families(lambda: {"default": (3, 180), "log.default": (2, 120)}))
    m.watch(suppressed_families(lambda: {"low": 1}))
    m.watch(resolver_families(lambda: SimpleNamespace(
        hits=1, upstream=1, blocked=1, failures=0, malformed=0, by_rcode={"NOERROR": 2},
        upstream_failures={"192.0.2.53:53": 1})))
    m.watch(feed_families(lambda: [FeedFreshness("f", True, 1, 1.0, 1.0, 1.0, 0, None, None,
                                                 None)]))
    m.logged_drops.labels("default").inc()
    m.incidents.labels("jndi-callback", "critical").inc()
    m.attribution_failures.labels("closed").inc()
    m.alerts.labels("stdout:json", "sent").inc()
    m.store_errors.inc()
    m.store_lost.inc()
    out: dict[str, set[str]] = {}
    for family in m.registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def queries(doc: dict) -> list[str]:
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", []) if t.get("expr")]


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, `by`/`without` labels) of a PromQL expression: label matchers, ranges,
    strings and function names are not metric names."""
    grouped = {label.strip() for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
               for label in clause.split(",") if label.strip()}
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\b(?:by|without)\s*\([^)]*\)", " ", bare)
    metrics = {name for name, call in re.findall(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\(?)", bare)
               if not call and name not in KEYWORDS}
    return metrics, grouped


def problems(doc: dict, known: dict[str, set[str]]) -> list[str]:
    found = []
    for expr in queries(doc):
        metrics, grouped = names_in(expr)
        if not metrics:
            found.append(f"{expr}: names no metric")
        for name in sorted(metrics - set(known)):
            found.append(f"{expr}: {name} is not exported by the agent")
        labels = set().union(*(known.get(n, set()) for n in metrics))
        for label in sorted(grouped - labels):
            found.append(f"{expr}: no metric of it has the label {label!r}")
    return found


def test_every_query_names_exported_metrics_and_labels() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert len(queries(doc)) >= 15
    assert problems(doc, exported()) == []


def test_the_dashboard_covers_the_main_families() -> None:
    used = set().union(*(names_in(e)[0] for e in queries(json.loads(DASHBOARD.read_text()))))
    for name in ("outguard_kernel_drops_total", "outguard_incidents_total",
                 "outguard_nflog_lost_total", "outguard_alerts_total",
                 "outguard_store_lost_incidents_total", "outguard_dns_queries_total",
                 "outguard_feed_age_seconds"):
        assert name in used


def test_a_planted_wrong_name_or_label_is_found() -> None:
    doc = {"panels": [{"targets": [
        {"expr": 'sum by (rule) (rate(outguard_kernel_drop_total{rule="x"}[5m]))'},
        {"expr": "sum by (sink) (rate(outguard_incidents_total[5m]))"},
        {"expr": "sum(rate(outguard_incidents_total[5m]))"}]}]}
    got = problems(doc, exported())
    assert len(got) == 3, got
    assert "outguard_kernel_drop_total is not exported" in got[0]
    assert "no metric of it has the label 'rule'" in got[1]
    assert "label 'sink'" in got[2]


def test_parser_reads_promql_as_written() -> None:
    assert names_in('max by (feed) (outguard_feed_age_seconds{feed!="x"}) * 1000') == (
        {"outguard_feed_age_seconds"}, {"feed"})
    assert names_in("sum(rate(a_total[5m])) / sum without (x) (rate(b_total[1h] offset 1d))") == (
        {"a_total", "b_total"}, {"x"})
