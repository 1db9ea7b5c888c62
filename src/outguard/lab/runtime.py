"""The lab's runtime directory and its daemons: files made at `up`, pid files, stopping.

Place in the data flow: `lifecycle.up` calls `prepare` (directories, the mirror's files, the
self-signed TLS certificate) before it starts the daemons; `lifecycle.down` calls `stop_daemon`
for each pid file and `remove` at the end. Pid files are trusted only if ``/proc/PID/cmdline``
still shows the expected program, so a recycled pid is never killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from outguard.errors import LabError
from outguard.kernel import procs
from outguard.lab import topology as t

STOP_WAIT = 3.0

MIRROR_FILES: dict[str, str] = {
    "README": "outguard lab package mirror: a stand-in for deb.debian.org\n",
    "Release": "Origin: outguard-lab\nSuite: stable\nComponents: main\nArchitectures: all\n",
    "hello_1.0_all.deb": "not really a package: the lab only checks that it can be fetched\n",
}


def openssl_argv(paths: t.LabPaths) -> list[str]:
    """A self-signed P-256 certificate for api.example.test (names and addresses in the SAN)."""
    api = t.host("api")
    san = ",".join([f"DNS:{api.fqdn}", *(f"IP:{a}" for a in api.addresses)])
    return [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "7", "-subj", f"/CN={api.fqdn}", "-addext", f"subjectAltName={san}",
        "-keyout", str(paths.tls_key), "-out", str(paths.tls_cert),
    ]


def prepare(paths: t.LabPaths) -> None:
    """Create the runtime directory with everything the daemons read."""
    for d in (paths.root, paths.tls_dir, paths.mirror_dir, paths.java_dir, paths.state_dir):
        d.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o755)
    for name, text in MIRROR_FILES.items():
        (paths.mirror_dir / name).write_text(text, encoding="utf-8")
    for log in (paths.access_log, paths.attacker_log):
        log.touch()
    # cloud.example.test starts at cloud-a (`dns.cloud_hosts_text`, written here to keep
    # runtime below dns)
    paths.cloud_hosts.write_text(f"{t.host('cloud-a').ipv4} {t.CLOUD}\n")
    try:
        proc = procs.run(openssl_argv(paths), timeout=30)
    except procs.NotInstalledError as exc:
        raise LabError("`openssl` is not installed (Debian package: openssl)") from exc
    except procs.TimedOutError as exc:
        raise LabError("openssl did not make the lab's TLS certificate in 30 s") from exc
    if proc.returncode != 0:
        raise LabError(f"openssl could not make the lab's TLS certificate: {proc.stderr.strip()}")


def remove(paths: t.LabPaths) -> None:
    shutil.rmtree(paths.root, ignore_errors=True)


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None if it is gone (a zombie has an empty cmdline)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.decode("utf-8", "replace").split("\0")[:-1] or None


def is_ours(pid: int, marker: str) -> bool:
    """True if process `pid` still runs a program whose argv contains `marker`."""
    argv = cmdline(pid)
    return argv is not None and any(marker in arg for arg in argv)


def daemon_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in `pid_file` if that process is alive and is the expected program."""
    pid = read_pid(pid_file)
    return pid if pid is not None and is_ours(pid, marker) else None


def stop_daemon(pid_file: Path, marker: str, wait: float = STOP_WAIT) -> bool:
    """SIGTERM, then SIGKILL after `wait` s; True if a process was stopped."""
    pid = daemon_pid(pid_file, marker)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while is_ours(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not is_ours(pid, marker):
            break
    else:
        raise LabError(f"process {pid} ({marker}) does not exit even after SIGKILL")
    pid_file.unlink(missing_ok=True)
    return True


def tail(path: Path, lines: int = 15) -> str:
    """The end of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])
