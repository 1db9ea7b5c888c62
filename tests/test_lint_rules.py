"""The lint rules that hold the kernel boundary and the code's shape, shown to fire.

ruff (pyproject.toml) bans `subprocess`, `ctypes`, `socket.AF_NETLINK`, `asyncio.create_task` and
`asyncio.ensure_future` outside the modules allowed them, and bounds complexity (mccabe) and
statements per function. A temporary copy of the project gets one planted violation of each, and
ruff must name it; the same imports inside `kernel/` stay allowed. `loop.create_task`, which ruff
cannot tell from any other method, is checked here: only the modules of TASK_OWNERS (the reasons
are in pyproject.toml) create tasks, except on an `asyncio.TaskGroup` of their own.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"
TASK_OWNERS = ("outguard/service/", "outguard/dns/process.py", "outguard/monitor/agent.py",
               "outguard/dns/supervisor.py", "outguard/dns/server.py",
               "outguard/dns/setwriter.py", "outguard/alerts/dispatch.py")

BANNED = """import asyncio
import ctypes
import subprocess
from socket import AF_NETLINK


async def spawn() -> None:
    asyncio.create_task(asyncio.sleep(0))
    asyncio.ensure_future(asyncio.sleep(0))
"""

COMPLEX = "def branchy(x: int) -> int:\n" + "".join(
    f"    if x == {i}:\n        return {i}\n" for i in range(16)) + "    return -1\n"
LONG = "def long() -> int:\n" + "".join(f"    x{i} = {i}\n" for i in range(51)) + "    return 0\n"


def _ruff(project: Path) -> list[tuple[str, str]]:
    """(file relative to the project, code) of every finding."""
    proc = subprocess.run([str(RUFF), "check", "--no-cache", "--output-format", "json", "."],
                          cwd=project, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return [(Path(f["filename"]).relative_to(project).as_posix(), f["code"])
            for f in json.loads(proc.stdout)]


def test_ruff_names_each_planted_violation(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    pkg = tmp_path / "src" / "outguard"
    for where in ("ruleset", "kernel", "service"):
        (pkg / where).mkdir(parents=True)
    (pkg / "ruleset" / "planted.py").write_text(BANNED + "\n\n" + COMPLEX + "\n\n" + LONG)
    (pkg / "kernel" / "planted.py").write_text(BANNED)
    (pkg / "service" / "planted.py").write_text(BANNED)
    found = _ruff(tmp_path)
    outside = [code for file, code in found if file == "src/outguard/ruleset/planted.py"]
    assert outside.count("TID251") == 5  # ctypes, subprocess, AF_NETLINK, the two task calls
    assert "C901" in outside and "PLR0915" in outside
    assert ("src/outguard/kernel/planted.py", "TID251") not in found
    # ruff ignores a code per file: the service's processes are `kernel_crossings`' to refuse
    assert ("src/outguard/service/planted.py", "TID251") not in found


def task_creators(src: Path) -> list[str]:
    """`X.create_task(...)` / `ensure_future(...)` outside TASK_OWNERS (a TaskGroup bound by
    `async with asyncio.TaskGroup() as X` is fine anywhere)."""
    out = []
    for file in sorted((src / "outguard").rglob("*.py")):
        name = file.relative_to(src).as_posix()
        if name.startswith(TASK_OWNERS):
            continue
        tree = ast.parse(file.read_text(encoding="utf-8"))
        groups = {item.optional_vars.id for node in ast.walk(tree)
                  if isinstance(node, ast.AsyncWith) for item in node.items
                  if isinstance(item.optional_vars, ast.Name)
                  and "TaskGroup" in ast.unparse(item.context_expr)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else \
                func.id if isinstance(func, ast.Name) else ""
            if called in ("create_task", "ensure_future") and not (
                    isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and func.value.id in groups):
                out.append(f"{name}:{node.lineno}: {ast.unparse(func)}")
    return out


def kernel_crossings(src: Path) -> list[str]:
    """Imports of subprocess or ctypes, and netlink sockets, outside `kernel/`: where ruff's
    per-file ignores (the task owners') let them through."""
    out = []
    for file in sorted((src / "outguard").rglob("*.py")):
        name = file.relative_to(src).as_posix()
        if name.startswith("outguard/kernel/"):
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(m.split(".")[0] in ("subprocess", "ctypes") for m in modules) or (
                    isinstance(node, ast.ImportFrom) and node.module == "socket"
                    and any(a.name == "AF_NETLINK" for a in node.names)) or (
                    isinstance(node, ast.Attribute) and node.attr == "AF_NETLINK"):
                out.append(f"{name}:{node.lineno}")
    return out


def test_only_the_kernel_starts_processes_and_opens_netlink(tmp_path: Path) -> None:
    assert kernel_crossings(ROOT / "src") == []
    planted = tmp_path / "outguard" / "service"
    planted.mkdir(parents=True)
    (planted / "planted.py").write_text(BANNED)
    assert kernel_crossings(tmp_path) == ["outguard/service/planted.py:2",
                                          "outguard/service/planted.py:3",
                                          "outguard/service/planted.py:4"]


def test_tasks_are_created_only_by_their_owners() -> None:
    assert task_creators(ROOT / "src") == []


def test_a_planted_task_outside_the_owners_is_named(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "outguard", src / "outguard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (src / "outguard" / "feeds" / "planted.py").write_text(
        "import asyncio\n\n\nasync def go() -> None:\n"
        "    async with asyncio.TaskGroup() as tg:\n        tg.create_task(asyncio.sleep(0))\n"
        "    asyncio.get_running_loop().create_task(asyncio.sleep(0))\n")
    assert task_creators(src) == [
        "outguard/feeds/planted.py:7: asyncio.get_running_loop().create_task"]
