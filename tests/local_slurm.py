"""A real Slurm cluster on this one machine, for the tests and for trying the Slurm scripts (root, Debian/Ubuntu).

    sudo .venv/bin/python tests/local_slurm.py up [NODES] [GPUS]   # install if missing, configure, start, wait
    sudo .venv/bin/python tests/local_slurm.py down                 # cancel jobs, stop what `up` started
    sudo .venv/bin/python tests/local_slurm.py status

What `up` does:

1. Installs Debian's `slurmctld slurmd slurm-client munge` with apt-get when a binary is missing (`apt-get update`
   first, once).
2. Starts munged (a key is created if there is none) unless a munge daemon already answers.
3. Writes `/etc/slurm/slurm.conf` (and `gres.conf`): NODES emulated nodes `n1..nN`, all on this host (127.0.0.1, one
   slurmd each on ports 17001..), each advertising this machine's CPUs and its memory / NODES, and GPUS placeholder
   GPUs backed by character devices that behave like /dev/null. Jobs see `CUDA_VISIBLE_DEVICES` and
   `SLURM_GPUS_ON_NODE` as on a GPU cluster but run on the CPU. One partition, `cpu` (default), no accounting (follow
   jobs with `scontrol show job` or the jobcomp file), proctrack/linuxproc and task/none (no cgroups), and a 20 s
   credential lifetime (AuthInfo=cred_expire: also how long a re-queued job waits before it starts again). A different
   shape than the running one restarts the daemons with a clean controller state; the same shape is a no-op.
4. Starts slurmctld and the slurmds and waits until every node is idle.

Every daemon it starts is recorded in a pid file under `RUN_DIR`; `down` stops exactly those (after checking the
pid still names that program), never anything else. The job helpers the tests use are in `slurm_cluster.py`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

RUN_DIR = Path("/run/open-r1-egsw-slurm")  # pid files of the daemons `up` started
ETC = Path("/etc/slurm")
STATE_DIR = Path("/var/spool/open-r1-egsw-slurmctld")
LOG_DIR = Path("/var/log/slurm")
JOBCOMP_LOG = LOG_DIR / "jobcomp.log"
FAKE_GPU_DIR = Path("/var/lib/open-r1-egsw-slurm/gpu")
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sinfo", "sbatch", "scontrol", "munged", "munge"]
PARTITION = "cpu"
FIRST_SLURMD_PORT = 17001


class ClusterError(RuntimeError):
    """The cluster could not be brought up (the message names the step and where its log is)."""


def unavailable_reason() -> str | None:
    """Why `up` cannot run here, or None. Root is needed (daemons, /etc/slurm); apt-get installs what is missing."""
    if os.geteuid() != 0:
        return "the local Slurm cluster needs root (it starts slurmctld, slurmd and munged)"
    if not all(_which(b) for b in BINARIES) and not shutil.which("apt-get"):
        return "slurm-wlm and munge are not installed and there is no apt-get to install them"
    return None


def _which(binary: str) -> str | None:
    return shutil.which(binary) or next((str(p) for p in (Path("/usr/sbin") / binary,) if p.exists()), None)


def _run(cmd: list[str], timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")
    return proc


def _log(message: str) -> None:
    print(f"local_slurm: {message}", flush=True)


# ------------------------------------------------------------------------------------------- processes we started


def _pid_alive(pid_file: Path, program: str) -> int | None:
    """The pid in `pid_file` if that process is alive, not a zombie, and runs `program`; else None."""
    try:
        pid = int(pid_file.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    if comm != program or "\nState:\tZ" in status:
        return None
    return pid


def _wait_pid_file(pid_file: Path, program: str, seconds: float = 15) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pid = _pid_alive(pid_file, program)
        if pid:
            return pid
        time.sleep(0.2)
    raise ClusterError(f"{program} did not write a live pid to {pid_file}; see {LOG_DIR}/")


def _stop(pid_file: Path, program: str) -> None:
    """Stop the process recorded in `pid_file` (TERM, then KILL after 10 s), only if it still runs `program`."""
    pid = _pid_alive(pid_file, program)
    if pid:
        os.kill(pid, 15)
        for _ in range(50):
            if not _pid_alive(pid_file, program):
                break
            time.sleep(0.2)
        else:
            os.kill(pid, 9)
        _log(f"stopped {program} (pid {pid})")
    pid_file.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- install, munge


def install_if_missing() -> None:
    if all(_which(b) for b in BINARIES):
        return
    _log(f"installing {' '.join(PACKAGES)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], timeout=600, env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES], timeout=900, env=env)


def _munge_answers() -> bool:
    if not _which("munge"):
        return False
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return cred.returncode == 0 and subprocess.run(["unmunge"], input=cred.stdout, capture_output=True,
                                                       timeout=10).returncode == 0  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_munge() -> None:
    if _munge_answers():  # ours from an earlier `up`, or the system's
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists() or key.stat().st_size == 0:
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    pid_file = run_dir / "munged.pid"
    _run(["runuser", "-u", "munge", "--", _which("munged"), "--force", f"--pid-file={pid_file}"])
    pid = _wait_pid_file(pid_file, "munged")
    (RUN_DIR / "munged.pid").write_text(f"{pid}\n")
    for _ in range(50):
        if _munge_answers():
            _log(f"started munged (pid {pid})")
            return
        time.sleep(0.2)
    raise ClusterError("munged does not answer; see /var/log/munge/munged.log")


# ------------------------------------------------------------------------------------------- configuration


def node_names(nodes: int) -> list[str]:
    return [f"n{i}" for i in range(1, nodes + 1)]


def _hardware() -> tuple[int, int]:
    """(CPUs, memory in MB) of this machine."""
    cpus = os.cpu_count() or 1
    with open("/proc/meminfo") as f:
        mem_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return cpus, mem_kb // 1024


def slurm_conf(nodes: int, gpus: int) -> str:
    host = socket.gethostname().split(".")[0]
    cpus, mem_mb = _hardware()
    shape = f"CPUs={cpus} RealMemory={max(mem_mb // nodes - 256, 256)}" + (f" Gres=gpu:{gpus}" if gpus else "")
    last_port = FIRST_SLURMD_PORT + nodes - 1
    lines = [
        f"# Written by tests/local_slurm.py: {nodes} emulated node(s) on this host, {gpus} placeholder GPU(s) each.",
        "ClusterName=egsw-local",
        f"SlurmctldHost={host}(127.0.0.1)",
        "SlurmUser=root",
        "AuthType=auth/munge",
        # a re-queued job waits cred_expire seconds before it may start again (default 120): 20 keeps the requeue
        # test short and still covers a step launch on a busy 2-core machine
        "AuthInfo=cred_expire=20",
        f"SlurmctldPidFile={RUN_DIR}/slurmctld.pid",
        f"SlurmdPidFile={RUN_DIR}/slurmd-%n.pid",
        f"StateSaveLocation={STATE_DIR}",
        "SlurmdSpoolDir=/var/spool/open-r1-egsw-slurmd-%n",
        f"SlurmctldLogFile={LOG_DIR}/slurmctld.log",
        f"SlurmdLogFile={LOG_DIR}/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={JOBCOMP_LOG}",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SlurmdParameters=config_overrides",  # nodes may advertise more than one slurmd's share of the host
        "EnforcePartLimits=ALL",
        "ReturnToService=2",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "KillWait=5",
        # a re-queued job becomes eligible when cred_expire passes, an event no scheduler pass follows: it then waits
        # for the next periodic pass (main loop 60 s, backfill 30 s by default); passes every 2 s bound that wait
        "SchedulerParameters=sched_interval=2,bf_interval=2",
    ]
    if gpus:
        lines.append("GresTypes=gpu")
    lines.append(f"NodeName=n[1-{nodes}] NodeHostname={host} NodeAddr=127.0.0.1 "
                 f"Port={FIRST_SLURMD_PORT}-{last_port} {shape} State=UNKNOWN")  # fmt: skip
    lines.append(f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def gres_conf(nodes: int, gpus: int) -> str:
    if not gpus:
        return ""
    return "".join(f"NodeName={n} Name=gpu File={FAKE_GPU_DIR}/nvidia[0-{gpus - 1}]\n" for n in node_names(nodes))


def _make_fake_gpus(gpus: int) -> None:
    """gres/gpu wants one device file per GPU: character devices 1,3 (what /dev/null is)."""
    FAKE_GPU_DIR.mkdir(parents=True, exist_ok=True)
    for i in range(gpus):
        path = FAKE_GPU_DIR / f"nvidia{i}"
        if path.is_char_device():
            continue
        path.unlink(missing_ok=True)
        os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))


# ------------------------------------------------------------------------------------------- daemons


def _slurmds(nodes: int) -> list[tuple[str, Path]]:
    return [(name, RUN_DIR / f"slurmd-{name}.pid") for name in node_names(nodes)]


def _controller_answers() -> bool:
    if not _which("scontrol"):
        return False
    try:
        return "is UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


def _cancel_all_jobs() -> None:
    jobs = subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, timeout=30).stdout.split()
    if not jobs:
        return
    _log(f"cancelling jobs {' '.join(jobs)}")
    subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)
    for _ in range(60):
        if not subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True, timeout=30).stdout.strip():
            return
        time.sleep(0.5)


def _stop_slurm() -> None:
    if _pid_alive(RUN_DIR / "slurmctld.pid", "slurmctld"):
        _cancel_all_jobs()
    for pid_file in sorted(RUN_DIR.glob("slurmd-*.pid")):
        _stop(pid_file, "slurmd")
    _stop(RUN_DIR / "slurmctld.pid", "slurmctld")


def _wait_idle(nodes: int, seconds: float = 90) -> str:
    deadline = time.monotonic() + seconds
    resumed = False
    states = ""
    while time.monotonic() < deadline:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=30)
        states = proc.stdout.strip()
        rows = [line.split() for line in states.splitlines()]
        if len(rows) == nodes and all(state.rstrip("*") in {"idle", "mixed", "allocated"} for _, state in rows):
            return states
        if not resumed and any(state.startswith(("drain", "down")) for _, state in rows) and \
                time.monotonic() > deadline - seconds + 5:  # fmt: skip
            subprocess.run(["scontrol", "update", f"nodename=n[1-{nodes}]", "state=resume"], capture_output=True,
                           timeout=30)  # fmt: skip
            resumed = True
        time.sleep(0.5)
    raise ClusterError(f"nodes not idle after {seconds:.0f} s: {states or 'no answer'}; see {LOG_DIR}/")


def up(nodes: int = 2, gpus: int = 8) -> str:
    """Bring the cluster to NODES x GPUS (idempotent); returns `sinfo -N` once every node is idle."""
    if os.geteuid() != 0:
        raise ClusterError("needs root")
    if nodes < 1 or gpus < 0:
        raise ClusterError(f"need nodes >= 1 and gpus >= 0, got {nodes}, {gpus}")
    install_if_missing()
    for directory in (RUN_DIR, ETC, STATE_DIR, LOG_DIR):
        directory.mkdir(parents=True, exist_ok=True)
    start_munge()
    conf, gres = slurm_conf(nodes, gpus), gres_conf(nodes, gpus)
    current = (ETC / "slurm.conf").read_text() if (ETC / "slurm.conf").exists() else None
    current_gres = (ETC / "gres.conf").read_text() if (ETC / "gres.conf").exists() else ""
    if (conf, gres) != (current, current_gres):
        _stop_slurm()
        (ETC / "slurm.conf").write_text(conf)
        if gres:
            (ETC / "gres.conf").write_text(gres)
        else:
            (ETC / "gres.conf").unlink(missing_ok=True)
        shutil.rmtree(STATE_DIR, ignore_errors=True)  # a saved state of another shape leaves stale drains
        STATE_DIR.mkdir(parents=True)
        _log(f"wrote {ETC / 'slurm.conf'}: {nodes} node(s), {gpus} GPU(s) each")
    if gpus:
        _make_fake_gpus(gpus)
    if not _pid_alive(RUN_DIR / "slurmctld.pid", "slurmctld"):
        if _controller_answers():
            raise ClusterError("a slurmctld that this harness did not start answers; stop it first")
        _run([_which("slurmctld"), "-i"])
        _log(f"started slurmctld (pid {_wait_pid_file(RUN_DIR / 'slurmctld.pid', 'slurmctld')})")
    for name, pid_file in _slurmds(nodes):
        Path(f"/var/spool/open-r1-egsw-slurmd-{name}").mkdir(parents=True, exist_ok=True)
        if _pid_alive(pid_file, "slurmd"):
            continue
        _run([_which("slurmd"), "-N", name])
        _log(f"started slurmd {name} (pid {_wait_pid_file(pid_file, 'slurmd')})")
    return _wait_idle(nodes)


def down() -> None:
    """Cancel every job, stop the slurmds, slurmctld and munged this harness started (by their pid files)."""
    if not RUN_DIR.exists():
        return
    _stop_slurm()
    _stop(RUN_DIR / "munged.pid", "munged")


def status() -> str:
    lines = []
    for pid_file in sorted(RUN_DIR.glob("*.pid")):
        program = pid_file.stem.split("-")[0]
        pid = _pid_alive(pid_file, program)
        lines.append(f"{pid_file.stem}: {'running, pid ' + str(pid) if pid else 'not running'}")
    if _controller_answers():
        lines.append(_run(["sinfo", "-N"]).stdout.rstrip())
        lines.append(_run(["squeue"]).stdout.rstrip())
    else:
        lines.append("slurmctld: not answering")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/local_slurm.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="install if missing, configure, start, wait until idle")
    start.add_argument("nodes", nargs="?", type=int, default=2)
    start.add_argument("gpus", nargs="?", type=int, default=8)
    commands.add_parser("down", help="cancel jobs, stop the daemons `up` started")
    commands.add_parser("status")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(up(args.nodes, args.gpus))
        elif args.command == "down":
            down()
        else:
            print(status())
    except ClusterError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
