"""A real systemd, booted as PID 1 of throwaway namespaces, for tests of the shipped units.

``unshare`` makes a shell PID 1 of new PID, mount, UTS, IPC, cgroup and network
namespaces, in a cgroup of its own.  The shell mounts an overlay whose lower layer
is the host's ``/`` (read-only) and whose upper layer is a tmpfs, the API file
systems, an empty ``/etc/systemd/system`` (so none of the host's enabled units
start), then ``pivot_root``s into it and becomes ``/lib/systemd/systemd``.  What
the booted system writes (units, /opt, /etc, journal) lives in that tmpfs and is
gone at power-off; its network is its own loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from gatewayd.demo import wait_for

SYSTEMD = Path("/lib/systemd/systemd")

#: PID 1 until it execs systemd: $1 is the work directory on the host.
INIT = r"""#!/bin/sh
set -eu
W=$1 R=$1/root
mount -n --make-rprivate /
mkdir -p "$R" "$W/layer"
mount -n -t tmpfs -o mode=0755,size=1g gatewayd-layer "$W/layer"
mkdir "$W/layer/upper" "$W/layer/work"
mount -n -t overlay -o "lowerdir=/,upperdir=$W/layer/upper,workdir=$W/layer/work" gatewayd-root "$R"
mount -n -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -n --bind "$R/proc/sys" "$R/proc/sys"
mount -n -o remount,bind,ro,nosuid,nodev,noexec "$R/proc/sys"
mount -n -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -n -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -n -t tmpfs -o mode=0755,nosuid,size=4m gatewayd-dev "$R/dev"
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read name major minor <<EOF
$node
EOF
    mknod -m 666 "$R/dev/$name" c "$major" "$minor"
done
mkdir -m 755 "$R/dev/pts"
mkdir -m 1777 "$R/dev/shm"
mount -n -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
: > "$W/console"
touch "$R/dev/console"
mount -n --bind "$W/console" "$R/dev/console"
mount -n -t tmpfs -o mode=0755,nosuid,nodev,size=256m gatewayd-run "$R/run"
mount -n -t tmpfs -o mode=1777,nosuid,nodev,size=256m gatewayd-tmp "$R/tmp"
mount -n -t tmpfs -o mode=0755 gatewayd-units "$R/etc/systemd/system"
cd "$R"
mkdir -p .host
pivot_root . .host
umount -n -l /.host
rmdir /.host
exec env -i container=gatewayd-tests /lib/systemd/systemd --system \
    systemd.unit=multi-user.target systemd.firstboot=0 </dev/null >/dev/console 2>&1
"""


def cgroup2_root() -> Path | None:
    for path in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if path.is_dir() and _fs_type(path) == "cgroup2fs":
            return path
    return None


def _fs_type(path: Path) -> str:
    done = subprocess.run(["stat", "-fc", "%T", str(path)], capture_output=True, text=True)
    return done.stdout.strip()


def unavailable() -> str | None:
    """Why systemd cannot be booted here, or None if it can."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root (CAP_SYS_ADMIN)"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is missing (Debian: apt-get install systemd)"
    for tool in ("unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian: apt-get install util-linux)"
    if cgroup2_root() is None:
        return "no cgroup2 hierarchy is mounted"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay file system"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--cgroup", "--net", "true"],
        capture_output=True, text=True,
    )
    if probe.returncode != 0:
        return f"cannot make namespaces: {probe.stderr.strip()}"
    return None


class BootedSystemd:
    """systemd as PID 1 of new namespaces; ``run`` enters them."""

    def __init__(self, workdir: Path, timeout: float = 60.0) -> None:
        self.workdir = workdir
        (workdir / "init").write_text(INIT)
        root = cgroup2_root()
        assert root is not None
        self.cgroup = root / f"gatewayd-tests-{os.getpid()}-{time.monotonic_ns()}"
        self.cgroup.mkdir()
        self.log = open(workdir / "unshare.log", "wb")
        # The child moves itself into the cgroup first, so that the cgroup namespace is rooted there.
        self.unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--cgroup", "--net",
             "--propagation", "private", "/bin/sh", str(workdir / "init"), str(workdir)],
            stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: (self.cgroup / "cgroup.procs").write_text("0"),
        )
        self.pid1 = self._wait(self._pid1, timeout, "PID 1")
        self._wait(lambda: (self.root / "run/systemd/private").is_socket() and self._comm() == "systemd",
                   timeout, "systemd's private bus")
        state = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout).stdout.strip()
        if state not in ("running", "degraded"):
            raise RuntimeError(f"systemd booted into state {state!r}:\n{self.journal()}")

    @property
    def root(self) -> Path:
        """The booted system's root directory, seen from the host."""
        return Path(f"/proc/{self.pid1}/root")

    def _pid1(self) -> int | None:
        if self.unshare.poll() is not None:
            raise RuntimeError(f"unshare ended: {(self.workdir / 'unshare.log').read_text()}")
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children").read_text().split()
        return int(children[0]) if children else None

    def _comm(self) -> str:
        try:
            return Path(f"/proc/{self.pid1}/comm").read_text().strip()
        except OSError:
            return ""

    def _wait(self, predicate, timeout, what):  # type: ignore[no-untyped-def]
        """The harness's ``wait_for``, with what ``unshare`` said when the boot did not come."""
        try:
            return wait_for(predicate, timeout, what)
        except TimeoutError as error:
            raise RuntimeError(f"{error}: {(self.workdir / 'unshare.log').read_text()}") from None

    def enter(self, *argv: str, network: bool = True, mounts: bool = True) -> list[str]:
        """The command line that runs ``argv`` in the booted system's namespaces.

        ``mounts=False`` keeps the host's files (its Python, this checkout) with the
        booted system's network; ``network=False`` keeps the host's network.
        """
        flags = ["-u", "-i", "-p", "-C"] if mounts else []
        flags += ["-m"] if mounts else []
        flags += ["-n"] if network else []
        return ["nsenter", "-t", str(self.pid1), *flags, "--", *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 60.0, network: bool = True,
            mounts: bool = True, cwd: str | None = None, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.enter(*argv, network=network, mounts=mounts), capture_output=True, text=True,
            timeout=timeout, cwd=cwd, env=env,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
        return self.run("/bin/sh", "-euc", script, **kwargs)

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "--no-pager", "-q", "-o", "cat", *args, check=False).stdout

    def poweroff(self, timeout: float = 20.0) -> None:
        """SIGRTMIN+4 (``systemctl poweroff``), SIGKILL if that takes too long; then the cgroup."""
        if self.unshare.poll() is None:
            os.kill(self.pid1, signal.SIGRTMIN + 4)
            try:
                self.unshare.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid1, signal.SIGKILL)
                self.unshare.wait(10)
        self.log.close()
        deadline = time.monotonic() + 10
        while self.cgroup.exists() and time.monotonic() < deadline:
            for directory in sorted(self.cgroup.rglob("*"), key=lambda p: -len(p.parts)) + [self.cgroup]:
                if directory.is_dir():
                    try:
                        directory.rmdir()
                    except OSError:
                        pass
            time.sleep(0.05)


def command_lines(markdown: str, section: str) -> Sequence[str]:
    """The first ```sh block under the heading ``section`` of a Markdown text."""
    text = markdown[markdown.index(f"## {section}\n"):]
    block = text[text.index("```sh\n") + 6:]
    return block[: block.index("```")].splitlines()
