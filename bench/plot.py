"""The plots of BENCHMARKS.md, drawn from the results the benchmark scripts write.

    python bench/plot.py [RESULTS_DIR] [PLOTS_DIR]      default bench/results, bench/plots

- nexmark.png, from RESULTS_DIR/nexmark.csv (bench/nexmark.sh): bids per second per core for
  each query, beside the per-core figures Flink and DBSP published (cited below; they count all
  Nexmark events, of which 92% are bids).
- latency.png, from RESULTS_DIR/latency-RATE.json (scripts/bench.sh): the distribution of the
  time from an event to its row committed in Delta, one curve per input rate.

Needs matplotlib (bench/requirements.txt).
"""

import csv
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

QUERIES = ["q0", "q1", "q2", "q5", "q7"]

# Published per-core throughput, events/s per core, as their sources give or allow to derive.
PUBLISHED = {
    # nexmark/nexmark GUIDE_V1.md, "Throughput/Cores" column: Flink 1.13, 100M events, 10M/s
    # datagen source, parallelism 8, RocksDB, exactly-once checkpoints every 3 minutes.
    "Flink 1.13 (nexmark/nexmark)": [155_020, 157_940, 175_210, 22_140, 12_330],
    # vmware/database-stream-processor PR #193, benchmark comment of 2022-09-26 (main branch):
    # DBSP's Rust API (queries written by hand), 100M events, 8 worker threads (the generator's
    # threads not counted), "Throughput/Cores" column; q7's is 100M / (8 x 20.739 s).
    "DBSP, Rust API (8 workers)": [862_564, 861_129, 867_452, 867_654, 602_729],
}


def nexmark(results: pathlib.Path, plots: pathlib.Path) -> None:
    rows = {r["query"]: r for r in csv.DictReader(open(results / "nexmark.csv"))}
    ours = [
        float(rows[q]["bids_per_second"]) / int(rows[q]["cores"]) if q in rows else 0
        for q in QUERIES
    ]
    series = {"Riskstream (bids, to Delta)": ours, **PUBLISHED}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(QUERIES))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(QUERIES)), QUERIES)
    ax.set_yscale("log")
    ax.set_ylabel("events per second per core (log)")
    ax.set_title("Nexmark, per core")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(plots / "nexmark.png", dpi=110)


def latency(results: pathlib.Path, plots: pathlib.Path) -> None:
    runs = sorted(
        (json.loads(p.read_text()) for p in results.glob("latency-*.json")),
        key=lambda r: r["rate"],
    )
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in runs:
        ax.plot(
            [ms / 1000 for ms in run["delta_ms"]],
            [p * 100 for p in run["percentiles"]],
            label=f"{run['rate']:,} events/s ({run['batches']} batches)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("event time to committed in Delta, seconds (log)")
    ax.set_ylabel("percentile of rows")
    ax.set_title("Transactions scoring job from the broker: latency at fixed input rates")
    ax.axhline(95, color="grey", linewidth=0.5)
    ax.legend(fontsize=8)
    ax.grid(which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(plots / "latency.png", dpi=110)


def main() -> None:
    results = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")
    plots = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "bench/plots")
    plots.mkdir(parents=True, exist_ok=True)
    nexmark(results, plots)
    latency(results, plots)
    print(f"wrote {plots}/nexmark.png and {plots}/latency.png")


if __name__ == "__main__":
    main()
