"""Fixtures for kernel tests: private network namespaces, always removed.

Every nftables operation of these tests happens inside a namespace the test created; the host
namespace's firewall is only ever read (`nft list tables`), never changed.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from outguard.kernel import netns as ns
from tests.kernel.topology import Topology, build


def kernel_skip_reason() -> str | None:
    """Why kernel tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "kernel tests need root (network namespaces, nftables)"
    if shutil.which("ip") is None:
        return "kernel tests need the `ip` command (iproute2)"
    if shutil.which("nft") is None:
        return "kernel tests need the `nft` command (nftables) to cross-check"
    try:
        ctypes.CDLL("libnftables.so.1")
    except OSError:
        return "kernel tests need libnftables.so.1 (libnftables1)"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Only items under tests/kernel reach this conftest hook.
    if item.get_closest_marker("kernel") is not None and (reason := kernel_skip_reason()):
        pytest.skip(reason)


def new_netns() -> str:
    """Create a uniquely named namespace with `lo` up; the caller must delete it."""
    name = f"ogt-{secrets.token_hex(4)}"
    ns.add(name)
    try:
        ns.run(name, ["ip", "link", "set", "lo", "up"])
    except BaseException:
        ns.delete(name)
        raise
    return name


def _fresh_netns() -> Iterator[str]:
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    name = new_netns()
    try:
        yield name
    finally:
        ns.delete(name)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace (`ogt-<hex>`, lo up), deleted after the test whatever happens."""
    yield from _fresh_netns()


@pytest.fixture
def netns2() -> Iterator[str]:
    """A second, independent namespace for tests that need two at once."""
    yield from _fresh_netns()


@pytest.fixture
def topology() -> Iterator[Topology]:
    """A server namespace (where policies are applied) joined to a peer namespace by a veth.

    See tests/kernel/topology.py. Everything (both namespaces, processes left in them, the
    state directory) is removed after the test, whatever happens.
    """
    if reason := kernel_skip_reason():
        pytest.skip(reason)
    with build(new_netns) as topo:
        yield topo
