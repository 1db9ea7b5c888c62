"""The options of the `k8s` target (`compile --target k8s -o KEY=VALUE`), checked once, and what
the four policy kinds share: the cluster DNS peer, the rule-key annotation, the YAML dump.

Place in the data flow: `targets.export` → `k8s.export_k8s(**options)` → `K8sOptions` → the
NetworkPolicy (`k8s`), Cilium (`k8s_cilium`) and AdminNetworkPolicy (`k8s_anp`) builders.

Pods resolve names through the cluster DNS (kube-dns / CoreDNS). A default-deny egress policy
that does not allow it breaks every lookup in the namespace, so each kind allows UDP and TCP 53
to the cluster DNS pods (`-o dns=NAMESPACE/LABEL=VALUE`, default kube-system/k8s-app=kube-dns)
and the report has a line `dns` for it (approximated: the policy itself does not allow it);
`-o dns=none` leaves it out. Each policy carries the annotation `outguard.io/rules`: the rule
key of each of its egress entries, in order, so that a reader (and the evaluator) can tell
which outguard rule an entry comes from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from outguard.export.common import ExportError

KINDS = ("all", "networkpolicy", "cilium", "cilium-clusterwide", "adminnetworkpolicy")
ANNOTATION = "outguard.io/rules"
DNS_KEY = "dns"
LABELS = {"app.kubernetes.io/managed-by": "outguard"}
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?")
_LABEL = re.compile(r"([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")

OPTIONS = {
    "kind": "all (default: every kind below, one file each), networkpolicy, cilium, "
            "cilium-clusterwide, adminnetworkpolicy",
    "dns": "the cluster DNS pods that every kind allows UDP/TCP 53 to, as NAMESPACE/LABEL=VALUE "
           "(default kube-system/k8s-app=kube-dns), or none",
    "name": "metadata.name of the policies (default outguard-egress)",
    "namespace": "metadata.namespace of the namespaced kinds (default: none, kubectl -n decides)",
    "cilium-version": "the Cilium the policies are for (default 1.19: wildcards as **.x, any "
                      "depth; before 1.19 they are *.x, one label only)",
    "priority": "AdminNetworkPolicy priority of the first policy (0-999, default 50; a policy "
                "longer than 100 rules continues at the next priorities)",
}


@dataclass(frozen=True)
class ClusterDns:
    namespace: str
    label: str
    value: str

    def cilium_selector(self) -> dict[str, Any]:
        return {"matchLabels": {"k8s:io.kubernetes.pod.namespace": self.namespace,
                                f"k8s:{self.label}": self.value}}

    def namespace_selector(self) -> dict[str, Any]:
        return {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}

    def pod_selector(self) -> dict[str, Any]:
        return {"matchLabels": {self.label: self.value}}

    def __str__(self) -> str:
        return f"{self.namespace}/{self.label}={self.value}"


@dataclass(frozen=True)
class K8sOptions:
    kind: str = "all"
    dns: ClusterDns | None = ClusterDns("kube-system", "k8s-app", "kube-dns")
    name: str = "outguard-egress"
    namespace: str | None = None
    cilium_version: tuple[int, int] = (1, 19)
    priority: int = 50

    @property
    def multi_level_wildcards(self) -> bool:
        """Cilium 1.19 added `**.` (any depth); before, `**` meant `*` (one label)."""
        return self.cilium_version >= (1, 19)

    def metadata(self, keys: list[str], *, namespaced: bool,
                 name: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name or self.name}
        if namespaced and self.namespace:
            meta["namespace"] = self.namespace
        meta["labels"] = dict(LABELS)
        meta["annotations"] = {ANNOTATION: json.dumps(keys)}
        return meta

    def dns_note(self) -> str:
        return (f"UDP and TCP 53 to the cluster DNS ({self.dns}) are allowed, which the policy"
                " does not say: pods resolve names through it (`-o dns=none` leaves it out)")


def options(kind: str = "all", dns: str = "kube-system/k8s-app=kube-dns",
            name: str = "outguard-egress", namespace: str | None = None,
            cilium_version: str = "1.19", priority: str = "50") -> K8sOptions:
    """The checked options (raises ExportError naming the option)."""
    if kind not in KINDS:
        raise ExportError(f"option kind={kind!r}: choose one of {', '.join(KINDS)}")
    cluster_dns = None
    if dns != "none":
        ns, _, selector = dns.partition("/")
        label, eq, value = selector.partition("=")
        if not (_NAME.fullmatch(ns) and eq and _LABEL.fullmatch(label) and _VALUE.fullmatch(value)):
            raise ExportError(f"option dns={dns!r}: write NAMESPACE/LABEL=VALUE (e.g."
                              " kube-system/k8s-app=kube-dns) or none")
        cluster_dns = ClusterDns(ns, label, value)
    for opt, text in (("name", name), ("namespace", namespace)):
        if text is not None and not _NAME.fullmatch(text):
            raise ExportError(f"option {opt}={text!r}: not a Kubernetes name (lower-case letters,"
                              " digits, '-', '.')")
    version = re.fullmatch(r"(\d+)\.(\d+)(\.\d+)?", cilium_version)
    if version is None:
        raise ExportError(f"option cilium-version={cilium_version!r}: write MAJOR.MINOR, e.g. 1.19")
    if not priority.isdigit() or not 0 <= int(priority) <= 999:
        raise ExportError(f"option priority={priority!r}: a number from 0 to 999")
    return K8sOptions(kind, cluster_dns, name, namespace,
                      (int(version.group(1)), int(version.group(2))), int(priority))


class _NoAliases(yaml.SafeDumper):
    """Shared sub-objects are written out in full: kubectl users read these files."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(*docs: dict[str, Any]) -> str:
    return yaml.dump_all(list(docs), Dumper=_NoAliases, sort_keys=False)
