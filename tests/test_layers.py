"""The package layers of DESIGN.md, enforced: imports point down one explicit order, no package
pair imports each other, no circle among modules; no module over 400 lines, and the planner and
the executor of an apply in short functions.

Every import counts: at module level, inside functions (the lazy imports that keep `outguard
--help` fast), under `if TYPE_CHECKING:`, `from . import x` and `import a.b`. An import of a
package's `__init__` counts as an import of that package. `test_a_planted_*` copy `src/` to a
temporary directory, plant one violation there and check that the checker names it: a checker
that cannot fail proves nothing.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom (0) to top. A module imports only from its own package and from lower lines; packages
# on one line sit side by side and do not import each other. "outguard" is the package root
# (`__version__`).
ORDER: tuple[tuple[str, ...], ...] = (
    ("outguard", "errors", "clock", "events"),  # pure records and errors every layer shares
    ("policy",),  # load + validate: every section's model
    ("ruleset",),  # the meaning of a policy: IR, lower, decide, names, keys
    ("journey",),  # suggest and simulate: pure functions of learned flows and a ruleset
    ("nftables", "export"),  # backends, side by side
    ("kernel",),  # the only code that talks to nftables, netlink, subprocesses
    ("state",),  # the state directory
    ("agentstate",),  # the agent's last report, in the state directory (status reads it)
    ("feeds", "dns"),
    ("pipeline",),  # load -> lower -> compile, once
    ("apply",),  # plan, execute, recover
    ("store", "alerts"),
    ("monitor",),  # decode consumers: attribute, classify, aggregate, agent
    ("proxy", "web"),  # the egress proxy (decides with ruleset.decide); the dashboard (reads the store)
    ("fleet",),  # many hosts, one PostgreSQL: the central API and the agent's side (service runs it)
    ("service",),  # the daemon's composition: kernel objects and tasks
    ("lab",),
    ("cli",),
    ("__main__",),
)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
SHORT_FUNCTIONS = ("outguard/apply/applyplan.py", "outguard/apply/executor.py")


def layer_of(package: str) -> int:
    for level, names in enumerate(ORDER):
        if package in names:
            return level
    raise KeyError(package)


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module under `root/outguard`."""
    out = {}
    for file in sorted((root / "outguard").rglob("*.py")):
        parts = list(file.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = file
    return out


def package_of(module: str) -> str:
    """`outguard.ruleset.ir` → ruleset; `outguard.errors` → errors; `outguard` → outguard."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "outguard"


def _imported(module: str, file: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(module imported, line) for each outguard import in the file, wherever it stands."""
    is_package = file.name == "__init__.py"
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "outguard" or alias.name.startswith("outguard."):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "outguard" and not target.startswith("outguard."):
                continue
            # `from outguard.nftables import nft_tx` imports the module nft_tx
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
            yield from ((sub, node.lineno) for sub in subs)
            if len(subs) < len(node.names):
                yield target, node.lineno


def import_graph(root: Path) -> dict[str, dict[str, tuple[Path, int]]]:
    """module → {module it imports: (file, line) of the first such import}."""
    modules = _modules(root)
    graph: dict[str, dict[str, tuple[Path, int]]] = {m: {} for m in modules}
    for module, file in modules.items():
        for name, line in _imported(module, file, modules):
            target = name
            while target not in modules and "." in target:  # `import outguard.a.b.name`
                target = target.rsplit(".", 1)[0]
            if target != module:
                graph[module].setdefault(target, (file, line))
    return graph


def _cycles(graph: dict[str, dict[str, tuple[Path, int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start, first in graph.items():
        if start in index:
            continue
        work = [(start, iter(first))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph.get(nxt, {}))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def check(root: Path) -> list[str]:
    """Every layering problem of the tree under `root` (a `src` directory), for people."""
    graph = import_graph(root)
    problems = []
    pairs: dict[tuple[str, str], str] = {}
    for module, targets in sorted(graph.items()):
        src = package_of(module)
        for target, (file, line) in sorted(targets.items()):
            dst = package_of(target)
            if dst == src:
                continue
            where = f"{file.relative_to(root)}:{line}"
            pairs.setdefault((src, dst), where)
            try:
                up = layer_of(dst) >= layer_of(src)
            except KeyError as exc:
                problems.append(f"{where}: package {exc.args[0]!r} is in no layer of ORDER")
                continue
            if up:
                side = "beside" if layer_of(dst) == layer_of(src) else "above"
                problems.append(f"{where}: {src} -> {dst}: {module} imports {target},"
                                f" which sits {side} it")
    for (src, dst), where in sorted(pairs.items()):
        if src < dst and (dst, src) in pairs:
            problems.append(f"packages {src} and {dst} import each other: {where} and"
                            f" {pairs[(dst, src)]}")
    for component in _cycles(graph):
        problems.append(f"import circle among modules: {' -> '.join(component)}")
    return problems


def long_things(root: Path) -> list[str]:
    """Modules over MAX_MODULE_LINES; functions over MAX_FUNCTION_LINES in SHORT_FUNCTIONS."""
    out = []
    for file in sorted((root / "outguard").rglob("*.py")):
        text = file.read_text(encoding="utf-8")
        name = file.relative_to(root).as_posix()
        if (lines := text.count("\n")) > MAX_MODULE_LINES:
            out.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        if name in SHORT_FUNCTIONS:
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    assert node.end_lineno is not None
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        out.append(f"{name}:{node.lineno}: {node.name} is {length} lines"
                                   f" (at most {MAX_FUNCTION_LINES})")
    return out


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(SRC / "outguard", root / "outguard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_every_package_is_in_a_layer() -> None:
    packages = {package_of(m) for m in _modules(SRC)}
    assert sorted(p for p in packages if not any(p in line for line in ORDER)) == []
    assert sorted(p for line in ORDER for p in line if p not in packages) == []


def test_imports_point_down_the_layers() -> None:
    assert check(SRC) == []


def test_no_long_modules_nor_long_planner_functions() -> None:
    assert all((SRC / name).is_file() for name in SHORT_FUNCTIONS)
    assert long_things(SRC) == []


def test_a_planted_upward_import_is_named(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    decide = root / "outguard" / "ruleset" / "decide.py"
    decide.write_text(decide.read_text() + "\n\ndef _late() -> None:\n"
                      "    from outguard.cli import main  # noqa: F401\n")
    problems = check(root)
    assert any("ruleset -> cli: outguard.ruleset.decide imports outguard.cli.main" in p
               and "outguard/ruleset/decide.py:" in p for p in problems), problems


def test_a_planted_sideways_import_and_pair_are_named(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "outguard" / "export" / "planted.py").write_text(
        "from outguard.nftables import nft as _nft\n")
    (root / "outguard" / "nftables" / "planted.py").write_text(
        "import outguard.export.planted\n")
    problems = check(root)
    assert any("export -> nftables" in p and "sits beside it" in p for p in problems), problems
    assert any(p.startswith("packages export and nftables import each other") for p in problems)


def test_a_planted_module_circle_is_named(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    pkg = root / "outguard" / "ruleset"
    (pkg / "planted_a.py").write_text("from outguard.ruleset import planted_b\n")
    (pkg / "planted_b.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from outguard.ruleset.planted_a import x\n")
    assert "import circle among modules: outguard.ruleset.planted_a ->" \
        " outguard.ruleset.planted_b" in check(root)


def test_a_planted_long_function_is_named(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    executor = root / SHORT_FUNCTIONS[1]
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    executor.write_text(executor.read_text() + f"\n\ndef _planted() -> None:\n{body}")
    assert any("_planted is 61 lines" in p for p in long_things(root))
