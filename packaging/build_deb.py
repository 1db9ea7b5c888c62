"""Build `dist/outguard_VERSION_ARCH.deb` from this checkout with dpkg-deb (`./dev package`).

What goes in, and why:
- outguard and its runtime dependencies in a private tree, `/usr/lib/outguard` (a venv made
  by hand: `pyvenv.cfg`, `bin/python3 -> /usr/bin/python3`, `lib/python3.11/site-packages`).
  Debian 12 has no package for pydantic 2 or orjson, and its numpy, dnspython, httpx and
  prometheus-client are older than outguard needs, so the dependencies are the exact
  distributions the tests run with, copied from the build's `.venv` by their RECORD files:
  nothing is downloaded at build or install time. pydantic-core, orjson and numpy are compiled
  for CPython 3.11 on this machine's architecture, so the package is `Architecture: amd64`
  (dpkg's own), not `all`, and depends on Debian's python3 3.11.
- `/usr/bin/outguard`, the units in `/lib/systemd/system` (not enabled: the package applies
  nothing), `/etc/outguard/policy.yaml` (an audit-mode example, a conffile), the resolver's
  system user (`/usr/lib/sysusers.d/outguard.conf`, created by the postinst), and man pages
  generated from the CLI's help with click-man.
lintian's remaining errors are those of any package that carries wheels: their compiled
objects are shipped as built (unstripped, libyaml inside PyYAML), and /usr/bin/outguard runs
the private interpreter on purpose.
Bytecode is compiled by the postinst and removed by the prerm, as Debian does for Python
(the units' read-only /usr would otherwise leave every start uncached).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "packaging"
PREFIX = Path("usr/lib/outguard")
PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"
SITE = PREFIX / "lib" / f"python{PYVER}" / "site-packages"
UNITS = ("outguard.service", "outguard-restore.service", "outguard-feeds.service",
         "outguard-feeds.timer")


def closure(name: str) -> list[md.Distribution]:
    """The runtime dependencies of distribution `name`, recursively (no extras)."""
    seen: dict[str, md.Distribution] = {}
    todo = [name]
    while todo:
        dist = md.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [d for k, d in sorted(seen.items()) if k != name]


def copy_distribution(dist: md.Distribution, site: Path) -> None:
    """Copy one installed distribution's files (its RECORD) into `site`; scripts stay out."""
    for file in dist.files or []:
        if file.parts[0] == ".." or "__pycache__" in file.parts or (
                file.parts[0] == "numpy" and "tests" in file.parts):  # numpy's own test suite
            continue
        src = Path(str(dist.locate_file(file)))
        dst = site / file
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def copy_outguard(site: Path, version: str) -> None:
    """outguard's own package from src/ (not an editable install's link), with a dist-info."""
    shutil.copytree(ROOT / "src" / "outguard", site / "outguard",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    info = site / f"outguard-{version}.dist-info"
    info.mkdir()
    meta = md.distribution("outguard").metadata
    requires = "".join(f"Requires-Dist: {r}\n" for r in meta.get_all("Requires-Dist") or []
                       if "extra ==" not in r)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: outguard\nVersion: {version}\n"
                                   f"Summary: {meta['Summary']}\n{requires}")
    (info / "entry_points.txt").write_text("[console_scripts]\n"
                                           "outguard = outguard.cli.main:main\n")
    (info / "INSTALLER").write_text("outguard-deb\n")


def private_python(tree: Path) -> None:
    """A venv by hand: Debian's python3 with only the private site-packages."""
    prefix = tree / PREFIX
    (prefix / "bin").mkdir(parents=True)
    (prefix / "pyvenv.cfg").write_text(f"home = /usr/bin\ninclude-system-site-packages = false\n"
                                       f"version = {PYVER}\n")
    os.symlink(f"/usr/bin/python{PYVER}", prefix / "bin" / "python3")
    os.symlink("python3", prefix / "bin" / "python")
    entry = tree / "usr" / "bin" / "outguard"
    entry.parent.mkdir(parents=True)
    entry.write_text(f"#!/{PREFIX}/bin/python3\n"
                     "import sys\n\nfrom outguard.cli.main import main\n\nsys.exit(main())\n")
    entry.chmod(0o755)


def man_pages(tree: Path, version: str, date: str) -> list[str]:
    """Man pages from the CLI's help (click-man), one per command, gzipped; their names."""
    from click_man.core import write_man_pages  # type: ignore[import-untyped]

    from outguard.cli.main import cli

    ctx = cli.make_context("outguard", [], resilient_parsing=True)
    for name in cli.list_commands(ctx):  # load the lazy commands, so click-man sees them
        cli.get_command(ctx, name)
    out = tree / "usr" / "share" / "man" / "man1"
    out.mkdir(parents=True)
    write_man_pages("outguard", cli, version=version, target_dir=str(out), date=date)
    names = []
    for page in sorted(out.iterdir()):
        with page.open("rb") as src, gzip.GzipFile(str(page) + ".gz", "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
        page.unlink()
        names.append(page.name)
    return names


def changelog(path: Path, version: str) -> None:
    """A native package's changelog: one entry naming this build's commit."""
    commit = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s%n%aD"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    text = (f"outguard ({version}) unstable; urgency=medium\n\n"
            f"  * Built from commit {commit[0][:70]}\n\n"
            f" -- outguard developers <outguard@example.org>  {commit[1]}\n")
    with gzip.GzipFile(str(path), "wb", mtime=0, compresslevel=9) as out:
        out.write(text.encode())


def debian_dir(tree: Path, version: str, arch: str, size_kib: int) -> None:
    deb = tree / "DEBIAN"
    deb.mkdir()
    next_minor = f"{sys.version_info.major}.{sys.version_info.minor + 1}"
    (deb / "control").write_text(f"""Package: outguard
Version: {version}
Architecture: {arch}
Maintainer: outguard developers <outguard@example.org>
Installed-Size: {size_kib}
Depends: python3 (>= {PYVER}), python3 (<< {next_minor}), libc6, nftables, libnftables1, iproute2, passwd
Recommends: systemd
Section: net
Priority: optional
Homepage: https://example.org/outguard
Description: default-deny egress filtering for Linux servers (nftables)
 outguard compiles a YAML egress policy into one nftables table and applies
 it atomically, with a confirmation watchdog that rolls back what you did not
 confirm. Its agent attributes every blocked packet to a process, classifies
 and alerts on it, runs a DNS resolver that feeds allowed names' addresses
 into the kernel, and keeps threat feeds current.
 .
 Nothing is applied and no unit is enabled at install.
""")
    (deb / "conffiles").write_text("/etc/outguard/policy.yaml\n")
    for script in ("postinst", "prerm", "postrm"):
        shutil.copy2(HERE / "debian" / script, deb / script)
        (deb / script).chmod(0o755)


def _step(what: str, since: float) -> float:
    print(f"  {what}: {time.monotonic() - since:.1f} s", file=sys.stderr)
    return time.monotonic()


def build(version: str, out_dir: Path, date: str) -> Path:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="outguard-deb-") as tmp:
        tree = Path(tmp) / "root"
        site = tree / SITE
        site.mkdir(parents=True)
        t0 = time.monotonic()
        private_python(tree)
        for dist in closure("outguard"):
            copy_distribution(dist, site)
        copy_outguard(site, version)
        for lib in site.rglob("*.so*"):  # shared objects are mapped, not run (lintian)
            lib.chmod(0o644)
        t0 = _step("copied outguard and its dependencies", t0)
        units = tree / "lib" / "systemd" / "system"
        units.mkdir(parents=True)
        for unit in UNITS:
            shutil.copy2(HERE / "systemd" / unit, units / unit)
        (tree / "etc" / "outguard").mkdir(parents=True)
        shutil.copy2(HERE / "policy.yaml", tree / "etc" / "outguard" / "policy.yaml")
        sysusers = tree / "usr" / "lib" / "sysusers.d"
        sysusers.mkdir(parents=True)
        shutil.copy2(HERE / "debian" / "sysusers.conf", sysusers / "outguard.conf")
        doc = tree / "usr" / "share" / "doc" / "outguard"
        doc.mkdir(parents=True)
        shutil.copy2(HERE / "debian" / "copyright", doc / "copyright")
        changelog(doc / "changelog.gz", version)
        man_pages(tree, version, date)
        t0 = _step("man pages", t0)
        size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file()) // 1024 + 1
        debian_dir(tree, version, arch, size)
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"outguard_{version}_{arch}.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z6", "--build", str(tree),
                        str(target)], check=True, capture_output=True, text=True)
        _step("dpkg-deb", t0)
    return target


def main() -> None:
    from outguard import __version__

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    date = os.environ.get("SOURCE_DATE_EPOCH")
    when = (subprocess.run(["date", "-u", "-d", f"@{date}", "+%Y-%m-%d"], capture_output=True,
                           text=True, check=True).stdout.strip() if date else
            subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%cs"],
                           capture_output=True, text=True, check=True).stdout.strip())
    print(build(__version__, args.out, when))


if __name__ == "__main__":
    main()
