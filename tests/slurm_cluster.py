"""A real one-node Slurm cluster on this host, for the tests (Debian's slurm-wlm and munge).

``SlurmCluster(root).start()`` starts, all in ``root`` (nothing under /etc is touched):
``munged`` as the munge user with a fresh 1024-byte key (mode 400) and its own socket,
``slurmctld`` and ``slurmd`` as root with a slurm.conf whose controller and one node are this
host (``hostname -s``), all its CPUs, a RealMemory below the machine's and one default
partition, on free ports; then it waits until ``sinfo`` shows the node idle. ``env`` holds
``SLURM_CONF``, which every Slurm command (and so bertui) needs to find this cluster.
``stop()`` cancels the cluster's jobs and stops the daemons it started (by their pids).
Accounting is off (no slurmdbd): ``sacct`` answers nothing, ``squeue``/``scontrol`` do.

``python tests/slurm_cluster.py DIR`` starts one by hand and stops it on Enter.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")


def missing_binaries() -> list[str]:
    """The Slurm and munge programs this host lacks (none: a cluster can start)."""
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
             for name in (*DAEMONS, *COMMANDS)}
    return [name for name, path in found.items() if not path]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return max(256, total_kb // 1024 // 2)  # below the machine's: slurmd refuses more


class SlurmCluster:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.run_dir = self.root / "run"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.pids: dict[str, int] = {}

    def _sbin(self, name: str) -> str:
        return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name

    def _command(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                             env={**os.environ, **self.env}, check=False)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip() or out.stdout.strip()}")
        return out

    # --- starting ---------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> SlurmCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # munged (not root) must reach its key and socket
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        try:
            self._start_munge()
            self.conf.write_text(self.slurm_conf())
            for daemon in ("slurmctld", "slurmd"):
                self._command(self._sbin(daemon), "-f", str(self.conf))
                self.pids[daemon] = self._pid(self.run_dir / f"{daemon}.pid")
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        munge = pwd.getpwnam("munge")
        key_dir = self.root / "munge"
        key_dir.mkdir(mode=0o700, exist_ok=True)
        self.run_dir.mkdir(mode=0o755, exist_ok=True)
        key = key_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        for path in (key_dir, key, self.run_dir):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        os.chmod(key, 0o400)
        self._command("runuser", "-u", "munge", "--", self._sbin("munged"),
                      f"--key-file={key}", f"--socket={self.socket}",
                      f"--pid-file={self.run_dir / 'munged.pid'}",
                      f"--log-file={key_dir / 'munged.log'}",
                      f"--seed-file={key_dir / 'munged.seed'}")
        self.pids["munged"] = self._pid(self.run_dir / "munged.pid")

    @property
    def socket(self) -> Path:
        return self.run_dir / "munge.socket"

    def slurm_conf(self) -> str:
        r = self.root
        return "\n".join([
            "ClusterName=bertui-test",
            f"SlurmctldHost={self.host}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "KillWait=30",
            "MinJobAge=300",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={self.run_dir / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.run_dir / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            f"NodeName={self.host} CPUs={os.cpu_count() or 1} RealMemory={_memory_mb()} "
            "State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n"

    @staticmethod
    def _pid(path: Path, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return int(path.read_text().strip())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
        raise RuntimeError(f"no pid file {path}")

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        said = ""
        while time.monotonic() < deadline:
            out = self._command("sinfo", "--noheader", "--format=%T", check=False)
            said = out.stdout.strip() or out.stderr.strip()
            if out.returncode == 0 and said.split() and said.split()[0] == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"the test Slurm node is not idle after {timeout:.0f} s ({said}); "
                           f"see {self.root / 'log'}")

    # --- asking and stopping ----------------------------------------------------------------

    def queue(self) -> dict[str, tuple[str, str]]:
        """The jobs squeue shows (pending and running): id -> (name, state)."""
        out = self._command("squeue", "--noheader", "--format=%i|%j|%T")
        rows = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
        return {r[0]: (r[1], r[2]) for r in rows if len(r) == 3}

    def hold_cpus(self, cpus: int) -> str | None:
        """A job of another user's kind that holds ``cpus`` of the node's CPUs until cancelled
        (its id; None for no CPUs)."""
        if cpus < 1:
            return None
        out = self._command("sbatch", "--parsable", f"--cpus-per-task={cpus}",
                            "--job-name=blocker", "--output=/dev/null", "--wrap", "sleep 600")
        job = out.stdout.strip()
        deadline = time.monotonic() + 30
        while self.queue().get(job, ("", ""))[1] != "RUNNING":
            if time.monotonic() > deadline:
                raise RuntimeError(f"the blocking job {job} does not run: {self.queue()}")
            time.sleep(0.2)
        return job

    def cancel(self, job: str | None) -> None:
        if job is not None:
            self._command("scancel", job)

    def stop(self) -> None:
        if "slurmctld" in self.pids:
            self._command("scancel", "--full", f"--user={os.getuid()}", check=False)
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                out = self._command("squeue", "--noheader", check=False)
                if out.returncode != 0 or not out.stdout.strip():
                    break
                time.sleep(0.5)
        for daemon in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(daemon, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (a daemon of ours that exited but is not reaped) is gone too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    cluster = SlurmCluster(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bertui-slurm"))
    t0 = time.monotonic()
    cluster.start()
    print(f"up in {time.monotonic() - t0:.1f} s: export SLURM_CONF={cluster.conf}", flush=True)
    try:
        input("Enter stops it ")
    finally:
        cluster.stop()
