"""kill -9 of one rank in a two-node run, on one machine: how fast both nodes stop, what they say, and --continue.

Usage::

    .venv/bin/python benchmarks/distributed_kill.py [--epochs 4]

Two torchrun launchers (``--nnodes 2``, one process each, c10d rendezvous on 127.0.0.1) train the small synthetic
demo (``Trainer``, 2 iterations per epoch); after the first checkpoint rank 1 gets SIGKILL. Printed: seconds from
the kill until each launcher exits, the error lines they print, then the same launch with ``--continue`` and its
result. The same steps are asserted by ``tests/e2e/test_distributed.py``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# the launch and the search for a rank's process are the e2e test's own, so the two cannot drift apart
from tests.e2e.test_distributed import _fold, _rank_pid, _two_nodes  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sauron_kill_"))
    from sauronnet.paths import Paths
    paths = Paths(work / "raw", work / "preprocessed", work / "results")
    env = dict(os.environ, OMP_NUM_THREADS="1", SAURON_RAW=str(paths.raw), SAURON_PREPROCESSED=str(paths.preprocessed),
               SAURON_RESULTS=str(paths.results))
    bin_dir = Path(sys.executable).parent
    try:
        subprocess.run([str(bin_dir / "sauron_demo_data"), "--train", "6", "--test", "1"], env=env, check=True,
                       capture_output=True)
        subprocess.run([str(bin_dir / "sauron_plan_and_preprocess"), "-d", "1", "--preset", "cpu"], env=env,
                       check=True, capture_output=True)
        latest = _fold(paths) / "checkpoint_latest.pth"
        t0 = time.monotonic()
        launchers = _two_nodes("kill", paths, "--epochs", str(args.epochs))
        while not latest.is_file() and all(p.poll() is None for p in launchers):
            time.sleep(0.1)
        pid = _rank_pid("kill", 1)
        if pid is None:
            print("the run did not start:", *(p.communicate()[1][-2000:] for p in launchers))
            return 1
        print(f"first checkpoint {time.monotonic() - t0:.1f} s after the launch; kill -9 of rank 1 (pid {pid})")
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        pending = list(enumerate(launchers))
        errors = {}
        while pending:
            for i, p in list(pending):
                if p.poll() is not None:
                    errors[i] = p.communicate()[1]
                    print(f"launcher {i} exited with status {p.returncode}, {time.monotonic() - killed:.2f} s after "
                          "the kill")
                    pending.remove((i, p))
            time.sleep(0.05)
        for i in sorted(errors):
            lines = [ln for ln in errors[i].splitlines() if ln.startswith("error:") or "rank      :" in ln
                     or "Signal 9" in ln]
            print(f"launcher {i} says:", *("  " + ln[:400] for ln in lines), sep="\n")
        t1 = time.monotonic()
        launchers = _two_nodes("continue", paths, "--epochs", str(args.epochs), "--continue")
        outputs = [p.communicate() for p in launchers]
        print(f"--continue on two nodes: exit statuses {[p.returncode for p in launchers]}, "
              f"{time.monotonic() - t1:.1f} s")
        print("".join(out for out, _ in outputs).strip())
        return 0 if all(p.returncode == 0 for p in launchers) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
