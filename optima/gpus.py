"""`python -m optima.gpus N -- COMMAND ...`: run COMMAND on N GPUs no other job of this machine holds.

Snakemake's `gpu` resource (workflow/profiles/local-gpu) caps how many GPUs the running jobs ask for
in total, but does not say which GPU a job gets; without this every job would use GPU 0. This wrapper
takes N free GPUs from the pool (``CUDA_VISIBLE_DEVICES`` if set, else every GPU ``nvidia-smi -L``
lists), holding one lock file per GPU (``flock``: released when the job exits, even if it is killed),
sets ``CUDA_VISIBLE_DEVICES`` to them and replaces itself with COMMAND (the locks stay with it).

Under SLURM (``SLURM_JOB_ID`` set) the scheduler already chose the GPUs: COMMAND runs unchanged. On a
machine without GPUs it runs unchanged too (the verb then says that ``runtime.device: cuda`` needs one).
``OPTIMA_GPU_LOCK_DIR`` sets where the lock files live (default: ``$TMPDIR/optima-gpu-locks-$UID``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time


def gpu_pool() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [str(i) for i, line in enumerate(row for row in out.splitlines() if row.startswith("GPU "))]
    return []


def lock_dir() -> str:
    return os.environ.get("OPTIMA_GPU_LOCK_DIR") or os.path.join(tempfile.gettempdir(), f"optima-gpu-locks-{os.getuid()}")


def acquire(count: int, pool: list[str], wait: float = 5.0, log=print) -> tuple[list[str], list[int]]:
    """Lock ``count`` GPUs of ``pool`` (waiting while others hold them); returns (ids, lock fds)."""
    directory = lock_dir()
    os.makedirs(directory, exist_ok=True)
    announced = False
    while True:
        chosen, fds = [], []
        for gpu in pool:
            fd = os.open(os.path.join(directory, f"gpu{gpu}.lock"), os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            chosen.append(gpu)
            fds.append(fd)
            if len(chosen) == count:
                return chosen, fds
        for fd in fds:
            os.close(fd)
        if not announced:
            log(f"optima.gpus: waiting for {count} free GPU(s) of {','.join(pool)} (locks in {directory})")
            announced = True
        time.sleep(wait)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m optima.gpus N -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    count, command = int(argv[0]), argv[2:]
    if count > 0 and not os.environ.get("SLURM_JOB_ID"):
        pool = gpu_pool()
        if pool:
            if count > len(pool):
                print(f"optima.gpus: a job asks for {count} GPUs but this machine has {len(pool)} "
                      f"({','.join(pool)}): lower its `gpu` resource in the profile", file=sys.stderr)
                return 2
            chosen, fds = acquire(count, pool, log=lambda m: print(m, file=sys.stderr))
            for fd in fds:
                os.set_inheritable(fd, True)  # the locks live as long as the command
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"optima.gpus: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
