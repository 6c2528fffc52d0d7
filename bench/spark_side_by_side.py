"""The same windowed query run by PySpark Structured Streaming and by Riskstream on the same
generated transactions; prints both rates and the ratio (BENCHMARKS.md, "Side by side with
Spark").

Spark: local[2], a file source over the JSON lines `riskstream generate` writes, the query of
bench/windowed_spend.sql (ten-minute windows sliding by five per user, one-minute watermark),
append mode to Parquet, Trigger.AvailableNow; each run timed from the query's start to its end
(the JVM's start-up is not counted). The first run in a JVM is cold: the JIT has not compiled
Spark's code yet and each generated class is compiled for the first time. A streaming job runs
for hours and every micro-batch after the first few runs warm, so the ratio is taken against
the warm runs (the same query again, from a fresh checkpoint, in the same session); the cold
run is printed beside it. Spark's Kafka connector is not on PyPI, hence files.

Riskstream: `riskstream bench engine bench/windowed_spend.toml`, the same generator, seed and
options in process (no broker), JSON decoding included, Delta output.

    python bench/spark_side_by_side.py [--events 1000000] [--runs 3]

Needs a release build and pyspark (tests/python/requirements.txt; the test venv has it).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START = "2026-01-01T00:00:00Z"  # the bench engine's fixed start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3,
                        help="timed runs of each engine (Spark's after its cold one); medians compared")
    args = parser.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/riskstream/target"))
    binary = target / "release" / "riskstream"
    work = Path(tempfile.mkdtemp(prefix="riskstream-spark-"))

    subprocess.run([str(binary), "generate", "--to", f"file:{work}/input/", "--source", "transactions",
                    "--count", str(args.events), "--seed", str(args.seed), "--start-time", START,
                    "--quiet"], check=True, cwd=ROOT)
    cold, warm, spark_rows = run_spark(work, args.events, args.runs)

    ours = []
    for run in range(args.runs):
        summary = work / f"riskstream-{run}.json"
        subprocess.run([str(binary), "bench", "engine", "bench/windowed_spend.toml", "--events",
                        str(args.events), "--seed", str(args.seed), "--out", str(work / f"riskstream-{run}"),
                        "--summary", str(summary)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours.append(json.loads(summary.read_text()))
    rates = [o["events_per_second"] for o in ours]
    print(f"events: {args.events} transactions, seed {args.seed}, {args.runs} timed runs each")
    print(f"PySpark local[2] Structured Streaming, cold (first query in the JVM): {cold:,.0f} events/s")
    print(f"PySpark local[2] Structured Streaming, warm: {', '.join(f'{r:,.0f}' for r in warm)} events/s"
          f" ({spark_rows} windows written)")
    print(f"Riskstream bench engine: {', '.join(f'{r:,.0f}' for r in rates)} events/s"
          f" ({ours[0]['output_rows']} windows written)")
    ratio = statistics.median(rates) / statistics.median(warm)
    print(f"ratio of medians against warm Spark: {ratio:.1f}x"
          f" (against the cold run: {statistics.median(rates) / cold:.1f}x)")


def run_spark(work: Path, events: int, runs: int) -> tuple[float, list[float], int]:
    """The cold run's rate, the warm runs' rates, and the windows a run writes."""
    os.environ["TZ"] = "UTC"
    time.tzset()
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = (SparkSession.builder.master("local[2]").appName("riskstream-side-by-side")
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.driver.memory", "4g")
             .getOrCreate())
    schema = "event_id STRING, user_id STRING, event_time TIMESTAMP, amount DOUBLE"

    def run(name: str) -> tuple[float, int]:
        source = spark.readStream.schema(schema).json(str(work / "input" / "financial-transactions*.jsonl"))
        windows = (source.withWatermark("event_time", "1 minute")
                   .groupBy("user_id", F.window("event_time", "10 minutes", "5 minutes"))
                   .agg(F.count("*").alias("transactions"), F.sum("amount").alias("spend"),
                        F.max("amount").alias("largest"), F.avg("amount").alias("average"),
                        F.min("amount").alias("smallest"))
                   .select("user_id", F.col("window.start").alias("window_start"),
                           F.col("window.end").alias("window_end"), "transactions", "spend", "largest",
                           "average", "smallest"))
        out = work / f"spark-out-{name}"
        start = time.perf_counter()
        query = (windows.writeStream.format("parquet").outputMode("append")
                 .option("path", str(out)).option("checkpointLocation", str(work / f"spark-checkpoint-{name}"))
                 .trigger(availableNow=True).start())
        query.awaitTermination()
        elapsed = time.perf_counter() - start
        return events / elapsed, spark.read.parquet(str(out)).count()

    cold, rows = run("cold")
    warm = []
    for i in range(runs):
        rate, warm_rows = run(f"warm-{i}")
        if warm_rows != rows:
            raise SystemExit(f"Spark wrote {warm_rows} windows in a warm run, {rows} in the cold one")
        warm.append(rate)
    spark.stop()
    return cold, warm, rows


if __name__ == "__main__":
    main()
