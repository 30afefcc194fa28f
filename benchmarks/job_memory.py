"""One artifact job of a finished or partly run study, made again in a scratch directory: its
seconds and the peak resident set of the process (sampled every 50 ms, and the kernel's
ru_maxrss), and, with `--compare`, whether its files equal the study's own artifact byte for
byte (a speed or memory change to the sampler must leave every stored draw as it is).

The study directory is only read: the job's inputs come from its artifacts, and the job writes
into a temporary directory that is removed afterwards. Run it with nothing else on the CPU.

    python benchmarks/job_memory.py runs/llm chosen_draw-5c618361c2e6 --threads 1
    python benchmarks/job_memory.py runs/llm draw-50d4a973b1b1 --threads 1 --compare
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path


def resident_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study_dir", type=Path)
    ap.add_argument("job_id")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a sweep worker's count)")
    ap.add_argument("--compare", action="store_true", help="compare the files made with the study's artifact")
    a = ap.parse_args()

    import torch

    from veriscale.study.execute import artifact_dir
    from veriscale.study.grid import expand
    from veriscale.study.sweep import load_study

    torch.set_num_threads(a.threads)
    jobs = {j.id: j for j in expand(load_study(a.study_dir))}
    if a.job_id not in jobs:
        raise SystemExit(f"{a.study_dir}: no job {a.job_id!r} in this study's grid")
    job = jobs[a.job_id]
    if job.kind == "eval":
        raise SystemExit(f"{a.job_id} is an evaluation; this script makes artifact jobs")
    peak = [resident_gib()]
    start_gib = peak[0]

    def watch() -> None:
        while True:
            peak[0] = max(peak[0], resident_gib())
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    job.world.quiet()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / job.id
        start = time.perf_counter()
        job.make(lambda i: artifact_dir(a.study_dir, i), out)
        seconds = time.perf_counter() - start
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        print(f"{job.id} ({job.kind}), {a.threads} thread(s): {seconds:.1f} s, peak resident "
              f"{max(peak[0], maxrss):.2f} GiB (at the start {start_gib:.2f} GiB)")
        if a.compare:
            stored = artifact_dir(a.study_dir, job.id)
            for f in sorted(p for p in out.iterdir() if p.is_file()):
                same = (stored / f.name).is_file() and (stored / f.name).read_bytes() == f.read_bytes()
                print(f"  {f.name}: {'identical to' if same else 'DIFFERS from'} {stored / f.name}")


if __name__ == "__main__":
    main()
