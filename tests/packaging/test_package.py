"""`./dev package`: the .deb builds from this checkout, installs into a throw-away root (`dpkg
--root`, maintainer scripts run without chroot against that root) and works from there:
`outguard --version`, `outguard check /etc/outguard/policy.yaml` (as root: with the kernel's
dry run, inside a network namespace of this test), the units verify next to their man page,
nothing is enabled, and the policy is a conffile in audit mode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from outguard.kernel import netns as ns
from tests.packaging.test_units import UNITS, unit_sections

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dpkg-deb") is None,
                                reason="needs root and dpkg (a Debian machine)")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([str(ROOT / "dev"), "package", "--out", str(out)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = Path(proc.stdout.strip().splitlines()[-1])
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    from outguard import __version__
    assert built == out / f"outguard_{__version__}_{arch}.deb" and built.exists()
    return built


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package installed by dpkg into an empty root of its own."""
    where = tmp_path_factory.mktemp("root")
    (where / "var/lib/dpkg/info").mkdir(parents=True)
    (where / "var/lib/dpkg/updates").mkdir()
    (where / "var/lib/dpkg/status").touch()
    proc = subprocess.run(["dpkg", f"--root={where}", "--force-script-chrootless",
                           "--force-depends", "--log=/dev/null", "-i", str(deb)],
                          capture_output=True, text=True, timeout=300, check=False, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return where


def _outguard(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed CLI, /usr/bin/outguard, run by the installed private python (its
    shebang names the path it has on a real host)."""
    return subprocess.run([str(root / "usr/lib/outguard/bin/python3"),
                           str(root / "usr/bin/outguard"), *args], capture_output=True,
                          text=True, timeout=120, check=False, env=ENV)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"ogt-pkg{os.getpid() % 100000}"
    ns.add(name)
    try:
        yield name
    finally:
        ns.delete(name)


def test_the_cli_runs_from_the_installed_root(root: Path) -> None:
    assert (root / "usr/bin/outguard").read_text().startswith("#!/usr/lib/outguard/bin/python3\n")
    assert os.access(root / "usr/bin/outguard", os.X_OK)
    proc = _outguard(root, "--version")
    from outguard import __version__
    assert proc.returncode == 0 and proc.stdout.strip() == f"outguard, version {__version__}"
    # it runs the installed copy, not this checkout or the .venv
    where = subprocess.run([str(root / "usr/lib/outguard/bin/python3"), "-c",
                            "import outguard, numpy, pydantic; print(outguard.__file__);"
                            " print(pydantic.__file__)"],
                           capture_output=True, text=True, timeout=60, check=True, env=ENV)
    assert all(line.startswith(str(root / "usr/lib/outguard/lib/"))
               for line in where.stdout.splitlines()), where.stdout


def test_check_of_the_shipped_policy(root: Path, netns: str) -> None:
    policy = root / "etc/outguard/policy.yaml"
    assert yaml.safe_load(policy.read_text())["mode"] == "audit"
    # as root, check asks the kernel for a dry run: in this test's namespace, not the host's
    proc = _outguard(root, "check", str(policy), "--strict", "--netns", netns)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok (4 rules" in proc.stdout, proc.stdout


def test_check_from_the_root_reports_a_broken_policy(root: Path, tmp_path: Path) -> None:
    """The same installed CLI fails where it should: the test can fail."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmode: audit\nallow:\n  - name: x\n    to: [203.0.113.1]\n"
                   "    portz: [80]\n")
    proc = _outguard(root, "check", str(bad))
    assert proc.returncode == 1 and "portz" in proc.stdout + proc.stderr


def test_the_layout_and_the_maintainer_scripts(root: Path, deb: Path) -> None:
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Architecture"],
                            capture_output=True, text=True, check=True).stdout
    assert fields.startswith("Package: outguard\n")
    listed = (root / "var/lib/dpkg/info/outguard.conffiles").read_text().split()
    assert listed == ["/etc/outguard/policy.yaml"]
    for unit in UNITS:
        assert (root / "lib/systemd/system" / unit).exists(), unit
    # nothing enabled at install: no WantedBy symlinks anywhere in the root
    assert not list(root.glob("etc/systemd/system/**/*.wants/*"))
    assert not (root / "var/lib/outguard").exists()  # nothing applied, no state
    # the resolver's user exists (the hardened units cannot run useradd themselves)
    assert "outguard-dns:" in (root / "etc/passwd").read_text()
    # bytecode from the postinst (the deb ships none), removed again by the prerm
    assert list((root / "usr/lib/outguard/lib").rglob("outguard/cli/__pycache__/main.*.pyc"))
    shipped = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    assert "__pycache__" not in shipped
    assert (root / "usr/share/man/man1/outguard.1.gz").exists()
    assert (root / "usr/share/man/man1/outguard-run.1.gz").exists()


def test_remove_and_purge(deb: Path, tmp_path: Path) -> None:
    """A second root: install, remove (bytecode gone, conffile kept), purge (conffile and the
    state directory gone)."""
    where = tmp_path / "root"
    (where / "var/lib/dpkg/info").mkdir(parents=True)
    (where / "var/lib/dpkg/updates").mkdir()
    (where / "var/lib/dpkg/status").touch()
    dpkg = ["dpkg", f"--root={where}", "--force-script-chrootless", "--force-depends",
            "--log=/dev/null"]

    def run(*args: str) -> None:
        proc = subprocess.run([*dpkg, *args], capture_output=True, text=True, timeout=300,
                              check=False, env=ENV)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    run("-i", str(deb))
    (where / "var/lib/outguard").mkdir(mode=0o700)
    run("--remove", "outguard")
    assert not (where / "usr/lib/outguard").exists() and not (where / "usr/bin/outguard").exists()
    assert (where / "etc/outguard/policy.yaml").exists()  # a conffile stays until purge
    run("--purge", "outguard")
    assert not (where / "etc/outguard/policy.yaml").exists()
    assert not (where / "var/lib/outguard").exists()


def test_the_installed_units_verify_with_their_man_page(root: Path, tmp_path: Path) -> None:
    """The units as installed, `/usr/bin/outguard` pointed at the root's, and
    `Documentation=man:outguard(1)` found among the root's man pages."""
    units = []
    for name in UNITS:
        text = (root / "lib/systemd/system" / name).read_text()
        assert unit_sections(text)["Unit"]["Documentation"] == "man:outguard(1)"
        (tmp_path / name).write_text(text.replace("/usr/bin/outguard",
                                                  str(root / "usr/bin/outguard")))
        units.append(str(tmp_path / name))
    proc = subprocess.run(["systemd-analyze", "verify", "--man=yes", *units], capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**ENV, "MANPATH": str(root / "usr/share/man")})
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    page = str(root / "usr/share/man/man1/outguard-run.1.gz")
    man = subprocess.run(["man", "-P", "cat", "-l", page],
                         capture_output=True, text=True, timeout=60, check=False, env=ENV)
    assert "--no-apply" in man.stdout and "--metrics-listen" in man.stdout, man.stdout[:500]
