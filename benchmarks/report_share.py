"""The report's share of a finished study's time, from Snakemake's per-job benchmark files.

Every rule writes `results/benchmarks/<rule>/...tsv` (wall seconds `s` and `cpu_time` of
its job). This prints, per rule, the jobs' total wall seconds, then the report jobs
(`report` and `report_index`) as a share of all jobs. Goal (issue 9): <= 10%.

    python benchmarks/report_share.py                 # results/ of the default study
    python benchmarks/report_share.py --results other/results --wall 728
                                                      # also against the study's elapsed wall time
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

REPORT_RULES = ("report", "report_index")


def job_seconds(results: Path) -> pl.DataFrame:
    rows = []
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        rule = path.relative_to(results / "benchmarks").parts[0]
        table = pl.read_csv(path, separator="\t")
        rows.append(
            {
                "rule": rule,
                "job": str(path.relative_to(results / "benchmarks")),
                "s": float(table["s"][-1]),
                "cpu_time": float(table["cpu_time"][-1]),
            }
        )
    if not rows:
        raise SystemExit(f"{results}/benchmarks: no benchmark files; run the study first")
    return pl.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--wall", type=float, help="the study's elapsed wall seconds (e.g. from `time snakemake`)")
    args = parser.parse_args(argv)
    jobs = job_seconds(Path(args.results))
    per_rule = (
        jobs.group_by("rule")
        .agg(pl.len().alias("jobs"), pl.col("s").sum(), pl.col("cpu_time").sum())
        .sort("s", descending=True)
    )
    for r in per_rule.iter_rows(named=True):
        print(f"{r['rule']:<15} {r['jobs']:>4} jobs  {r['s']:>8.1f} s wall  {r['cpu_time']:>8.1f} s CPU")
    report = jobs.filter(pl.col("rule").is_in(REPORT_RULES))
    total, mine = jobs["s"].sum(), report["s"].sum()
    share = 100 * mine / total
    print(f"\nreport jobs: {len(report)}, {mine:.1f} s of {total:.1f} s summed over all {len(jobs)} jobs: {share:.2f}%")
    for r in report.iter_rows(named=True):
        print(f"  {r['job']}: {r['s']:.2f} s")
    if args.wall:
        print(
            f"against the study's {args.wall:.0f} s elapsed: {100 * mine / args.wall:.2f}% (if run one after another)"
        )


if __name__ == "__main__":
    main()
