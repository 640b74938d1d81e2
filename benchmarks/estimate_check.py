"""The estimate of a study against the study's real run: per stage, the summed job time the estimate
gives for this machine against the job times Snakemake's benchmark files recorded, and the bytes
it gives against what `results/` holds (without the benchmark files themselves).

    make demo && python benchmarks/estimate_check.py                 # the default study, here
    python benchmarks/estimate_check.py --study DIR --configfile my.yaml --machine cpu

Goals (issue 24): time within 2x (stage by stage for the stages that take a tenth of the total or
more, and in total), disk within 10% in total.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections import defaultdict
from pathlib import Path

from workflow.estimate.cli import estimate, human_bytes, human_time


def real_times(results: Path) -> dict[str, float]:
    """Summed job seconds per rule, from results/benchmarks/<rule>/**.tsv."""
    out: dict[str, float] = defaultdict(float)
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        rule = tsv.relative_to(results / "benchmarks").parts[0]
        with tsv.open() as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        out[rule] += sum(float(r["s"]) for r in rows)
    return dict(out)


def real_bytes(results: Path) -> int:
    """Bytes of the files under results/ (apparent sizes), the benchmark files left out."""
    total = 0
    for root, _, files in os.walk(results):
        if Path(root).is_relative_to(results / "benchmarks"):
            continue
        total += sum((Path(root) / f).lstat().st_size for f in files)
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("."), help="the folder the study ran in (its results/)")
    p.add_argument("--configfile", default=None, help="its config (default: the repository's config.yaml)")
    p.add_argument("--machine", default="cpu", help="the throughput table's machine the study ran on")
    args = p.parse_args()
    est = estimate(args.configfile, args.study)
    results = args.study / "results"
    times = real_times(results)
    if args.machine not in est["machines"]:
        raise SystemExit(f"--machine: {args.machine!r} is not in the throughput table ({', '.join(est['machines'])})")
    total_est = est["total"]["seconds"][args.machine]
    if total_est is None:
        raise SystemExit(f"--machine {args.machine}: the throughput table has no figures for it yet")
    total_real = sum(times.values())
    print(f"{'stage':<18} {'jobs':>4} {'estimate':>10} {'real':>10} {'ratio':>6}")
    worst = 1.0
    for stage, row in sorted(est["stages"].items(), key=lambda kv: -times.get(kv[0], 0)):
        e, r = row["seconds"][args.machine], times.get(stage, 0.0)
        ratio = e / r if r else float("nan")
        big = r >= 0.1 * total_real
        if big:
            worst = max(worst, ratio, 1 / ratio)
        print(
            f"{stage:<18} {row['jobs']:>4} {human_time(e):>10} {human_time(r):>10} {ratio:>6.2f}{' *' if big else ''}"
        )
    print(f"{'total':<18} {est['total']['jobs']:>4} {human_time(total_est):>10} {human_time(total_real):>10} "
          f"{total_est / total_real:>6.2f}")  # fmt: skip
    print("(* a stage with a tenth of the real time or more)")
    disk_est, disk_real = est["total"]["disk"], real_bytes(results)
    print(f"disk: estimate {human_bytes(disk_est)}, real {human_bytes(disk_real)}, ratio {disk_est / disk_real:.3f}")
    ok_time = worst <= 2 and 0.5 <= total_est / total_real <= 2
    ok_disk = abs(disk_est / disk_real - 1) <= 0.10
    print(f"time within 2x: {'yes' if ok_time else 'NO'}; disk within 10%: {'yes' if ok_disk else 'NO'}")


if __name__ == "__main__":
    main()
