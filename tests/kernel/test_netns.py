"""kernel.netns: namespace lifecycle, commands inside, and per-thread setns."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest

from outguard.errors import KernelError
from outguard.kernel import netns as ns


def _thread_netns_inode() -> int:
    # /proc/self/ns/net would show the thread-group leader; the namespace is per thread.
    return os.stat("/proc/thread-self/ns/net").st_ino


# --- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "x" * 65, "sp ace", "é", "../etc"])
def test_invalid_names_are_refused(bad: str) -> None:
    with pytest.raises(KernelError, match="invalid network namespace name"):
        ns.exec_argv(bad, ["true"])
    with pytest.raises(KernelError):
        ns.NetnsThread(bad)


def test_exec_argv() -> None:
    assert ns.exec_argv("ogt-1.a_b", ["nft", "-j", "list", "tables"]) == [
        "ip", "netns", "exec", "ogt-1.a_b", "nft", "-j", "list", "tables",
    ]  # fmt: skip


def test_netns_thread_none_stays_in_current_namespace() -> None:
    with ns.NetnsThread(None) as t:
        assert t.call(_thread_netns_inode) == _thread_netns_inode()
        assert t.call(threading.get_ident) != threading.get_ident()


def _add(a: int, b: int = 0) -> int:
    return a + b


def test_call_returns_value_and_reraises() -> None:
    with ns.NetnsThread(None) as t:
        assert t.call(_add, 2, b=3) == 5
        with pytest.raises(ZeroDivisionError):
            t.call(lambda: 1 // 0)
        assert t.call(lambda: t.call(lambda: "nested")) == "nested"  # no deadlock
    with pytest.raises(KernelError, match="closed"):
        t.call(lambda: None)
    t.close()  # idempotent


# --- kernel ----------------------------------------------------------------------------------


@pytest.mark.kernel
def test_lifecycle(netns: str) -> None:
    assert ns.exists(netns)
    assert netns in ns.list_names()
    with pytest.raises(KernelError, match="cannot create"):
        ns.add(netns)  # already there
    ns.delete(netns)
    assert not ns.exists(netns)
    assert netns not in ns.list_names()
    ns.delete(netns)  # absent: no error


@pytest.mark.kernel
def test_run_inside(netns: str) -> None:
    out = ns.run(netns, ["ip", "-o", "link", "show"]).stdout
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
    assert ns.run(netns, ["cat"], input="hello").stdout == "hello"
    proc = ns.run(netns, ["sh", "-c", "echo oops >&2; exit 3"], check=False)
    assert proc.returncode == 3
    with pytest.raises(KernelError, match=r"exit 3.*oops"):
        ns.run(netns, ["sh", "-c", "echo oops >&2; exit 3"])
    with pytest.raises(KernelError, match="did not finish"):
        ns.run(netns, ["sleep", "5"], timeout=0.2)


@pytest.mark.kernel
def test_delete_kills_processes_left_inside(netns: str) -> None:
    proc = subprocess.Popen(ns.exec_argv(netns, ["sleep", "600"]))
    try:
        deadline = time.monotonic() + 5
        while str(proc.pid) not in _pids_text(netns).split():
            assert time.monotonic() < deadline, "sleep never showed up in the namespace"
            time.sleep(0.02)
        ns.delete(netns)
        assert proc.wait(timeout=5) == -9
        assert not ns.exists(netns)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pids_text(name: str) -> str:
    return subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
    ).stdout


@pytest.mark.kernel
def test_netns_thread_is_in_the_namespace_and_main_thread_is_not(netns: str) -> None:
    host_inode = _thread_netns_inode()
    ns_inode = os.stat(os.path.join(ns.NETNS_DIR, netns)).st_ino
    assert ns_inode != host_inode
    with ns.NetnsThread(netns) as t:
        assert t.call(_thread_netns_inode) == ns_inode
        assert [n for _i, n in t.call(socket.if_nameindex)] == ["lo"]
        assert _thread_netns_inode() == host_inode  # the caller did not move
    assert _thread_netns_inode() == host_inode


@pytest.mark.kernel
def test_two_netns_threads_at_once(netns: str, netns2: str) -> None:
    ns.run(netns2, ["ip", "link", "add", "ogveth0", "type", "veth", "peer", "name", "ogveth1"])
    with ns.NetnsThread(netns) as a, ns.NetnsThread(netns2) as b:
        names_a = a.call(lambda: sorted(n for _i, n in socket.if_nameindex()))
        names_b = b.call(lambda: sorted(n for _i, n in socket.if_nameindex()))
        assert names_a == ["lo"]
        assert names_b == ["lo", "ogveth0", "ogveth1"]
        assert a.call(_thread_netns_inode) != b.call(_thread_netns_inode)


@pytest.mark.kernel
def test_netns_thread_on_missing_namespace() -> None:
    with pytest.raises(KernelError, match="no network namespace 'ogt-absent'"):
        ns.NetnsThread("ogt-absent")
