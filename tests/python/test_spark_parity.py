"""Parity with Spark: the same window() and session_window() queries over the same rows give the
same groups in PySpark (local[2], from PyPI) and in `riskstream sql`."""

import json
import os
import random
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from conftest import run_riskstream

QUERIES = {
    "tumbling": "window(event_time, '10 minutes')",
    "sliding": "window(event_time, '10 minutes', '3 minutes')",
    "sliding_with_start": "window(event_time, '10 minutes', '5 minutes', '2 minutes')",
    "session": "session_window(event_time, '4 minutes')",
    # A gap per row; a gap of 0 puts its row in no session (Spark drops it).
    "session_dynamic": ("session_window(event_time, CASE WHEN amount < 20 THEN '0 seconds' "
                        "WHEN amount > 250 THEN '2 minutes' ELSE '6 minutes' END)"),
}


def sql(window_call: str) -> str:
    name = window_call.split("(")[0]
    return (f"SELECT user_id, {name}.start AS ws, {name}.end AS we, count(*) AS n, "
            f"sum(amount) AS total, max(amount) AS biggest FROM events GROUP BY user_id, {window_call}")


def events(n: int = 3000, seed: int = 7) -> list[tuple]:
    """Rows of 25 users over three hours, some without a time; whole amounts, so sums are exact
    in any order."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    rows = []
    for i in range(n):
        t = None if rng.random() < 0.02 else start + timedelta(milliseconds=rng.randrange(3 * 3600 * 1000))
        rows.append((f"e{i}", f"u{rng.randrange(25)}", t, float(rng.randrange(1, 500))))
    return rows


def as_utc(value) -> str:
    """A timestamp from either side as an ISO string in UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat()


def key(row: dict) -> tuple:
    return (row["user_id"], as_utc(row["ws"]), as_utc(row["we"]), int(row["n"]),
            float(row["total"]), float(row["biggest"]))


@pytest.fixture(scope="module")
def spark():
    # Spark gives timestamps back as naive local times: make local UTC, in Python and the JVM.
    os.environ["TZ"] = "UTC"
    time.tzset()
    from pyspark.sql import SparkSession
    session = (SparkSession.builder.master("local[2]").appName("riskstream-parity")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .getOrCreate())
    yield session
    session.stop()


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    rows = events()
    table = pa.table({
        "event_id": pa.array([r[0] for r in rows], pa.string()),
        "user_id": pa.array([r[1] for r in rows], pa.string()),
        "event_time": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
        "amount": pa.array([r[3] for r in rows], pa.float64()),
    })
    root = tmp_path_factory.mktemp("parity")
    write_deltalake(str(root / "events"), table)
    return root, rows


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_window_groups_equal_sparks(spark, lake, riskstream_bin, name):
    root, rows = lake
    query = sql(QUERIES[name])
    df = spark.createDataFrame(rows, "event_id string, user_id string, event_time timestamp, amount double")
    df.createOrReplaceTempView("events")
    theirs = sorted(key(r.asDict()) for r in spark.sql(query).collect())

    out = run_riskstream(riskstream_bin, "sql", "--lake", str(root), "--format", "json", query).stdout
    ours = sorted(key(json.loads(line)) for line in out.splitlines() if line.strip())

    assert len(theirs) > 100
    assert ours == theirs


STREAMING_SQL = {
    "sliding": ("SELECT user_id, window.start AS ws, window.end AS we, count(*) AS n, sum(amount) AS total, "
                "max(amount) AS biggest FROM transactions "
                "GROUP BY user_id, window(event_time, '2 minutes', '1 minute')"),
    "session": ("SELECT user_id, session_window.start AS ws, session_window.end AS we, count(*) AS n, "
                "sum(amount) AS total, max(amount) AS biggest FROM transactions "
                "GROUP BY user_id, session_window(event_time, '20 seconds')"),
    "session_dynamic": ("SELECT user_id, session_window.start AS ws, session_window.end AS we, count(*) AS n, "
                        "sum(amount) AS total, max(amount) AS biggest FROM transactions "
                        "GROUP BY user_id, session_window(event_time, CASE WHEN amount < 2 THEN '0 seconds' "
                        "WHEN amount > 100 THEN '10 seconds' ELSE '30 seconds' END)"),
}

STREAMING_SPEC = """
name = "parity-{name}"
[readStream]
format = "kafka"
[readStream.options]
"kafka.bootstrap.servers" = "${{KAFKA_BOOTSTRAP_SERVERS}}"
subscribe = "${{RISKSTREAM_TOPIC_PREFIX}}financial-transactions"
startingOffsets = "earliest"
maxOffsetsPerTrigger = 1000000
[query]
schema = "transactions"
file = "{sql}"
watermark = {{ column = "event_time", delay = "1 minute" }}
[writeStream]
format = "delta"
outputMode = "append"
[writeStream.options]
path = "{lake}/windows"
checkpointLocation = "{lake}/checkpoint"
"""


def rounded(row: dict) -> tuple:
    """A window's values, the sum to a millionth (the engines add in different orders)."""
    k = key(row)
    return k[:4] + (round(k[4], 6), k[5])


@pytest.mark.parametrize("name", sorted(STREAMING_SQL))
def test_streamed_windows_in_append_mode_equal_sparks(spark, riskstream_bin, kafka_bootstrap, tmp_path, name):
    """The same stream (one batch, so neither engine has late rows) through Riskstream from Kafka
    and through Spark Structured Streaming from the same records as JSON lines: append mode
    writes the same windows, those the watermark after the batch has passed."""
    from streamjobs import StreamJob
    from conftest import consume_all

    sql = STREAMING_SQL[name]
    (tmp_path / "q.sql").write_text(sql)
    spec = tmp_path / "job.toml"
    spec.write_text(STREAMING_SPEC.format(name=name, sql=tmp_path / "q.sql", lake=tmp_path / "lake"))
    job = StreamJob(riskstream_bin, kafka_bootstrap, str(tmp_path / "lake"), str(tmp_path / "checkpoints"))
    job.spec = spec
    # 4,000 transactions of 40 users over about 13 minutes, none malformed (Spark would keep what
    # it can of a bad record; Riskstream dead-letters it).
    job.generate("--source", "transactions", "--count", "4000", "--seed", "5", "--users", "40",
                 "--event-rate", "5", "--malformed", "0")
    job.run("--available-now")
    ours = sorted(rounded(r) for r in job.table("windows").to_pylist())

    records, _ = consume_all(kafka_bootstrap, f"{job.prefix}financial-transactions", 4000)
    source = tmp_path / "input"
    source.mkdir()
    (source / "events.jsonl").write_bytes(b"\n".join(r.value for r in records) + b"\n")
    schema = "event_id STRING, user_id STRING, event_time TIMESTAMP, amount DOUBLE"
    (spark.readStream.schema(schema).json(str(source))
     .withWatermark("event_time", "1 minute").createOrReplaceTempView("transactions"))
    query = (spark.sql(sql).writeStream.format("parquet").outputMode("append")
             .option("path", str(tmp_path / "spark-out"))
             .option("checkpointLocation", str(tmp_path / "spark-checkpoint"))
             .trigger(availableNow=True).start())
    query.awaitTermination()
    theirs = sorted(rounded(r.asDict()) for r in spark.read.parquet(str(tmp_path / "spark-out")).collect())

    assert len(theirs) > 100
    assert ours == theirs
