"""`riskstream run` against the real broker (tansu, SQLite storage) and S3 server (moto): bounded
runs, restarts, kill -9 at random instants, and SIGTERM, with exactly-once checked against what
the producer had acknowledged and what an independent Kafka client reads back."""

import random
import signal
import time
from pathlib import Path

from conftest import read_json, s3_env
from streamjobs import (TRANSACTIONS_TOPIC, StreamJob, check_alerts, check_exactly_once, progress_lines,
                        s3_storage_options)


def transactions_only(job: StreamJob, tmp_path: Path, count: int, *extra: str, seed: int = 11,
                      background: bool = False):
    summary = tmp_path / f"generate-{time.monotonic_ns()}.json"
    proc = job.generate("--source", "transactions", "--count", str(count), "--seed", str(seed), "--malformed", "0.01",
                        *extra, summary=summary, background=background)
    return summary if background else read_json(summary), proc


def acknowledged(summary: dict, job: StreamJob) -> int:
    delivery = {d["topic"]: d for d in summary["delivery"]}
    return delivery[job.prefix + TRANSACTIONS_TOPIC]["acknowledged"]


def test_available_now_reads_everything_in_bounded_batches_then_stops(riskstream_bin, kafka_bootstrap, tmp_path):
    job = StreamJob(riskstream_bin, kafka_bootstrap, str(tmp_path / "lake"), str(tmp_path / "checkpoints"),
                    extra_env={"RISKSTREAM_MAX_OFFSETS_PER_TRIGGER": "7000"})
    summary, _ = transactions_only(job, tmp_path, 20000)
    acked = acknowledged(summary, job)
    malformed = summary["sources"][TRANSACTIONS_TOPIC]["malformed"]
    assert malformed > 0

    proc = job.run("--available-now")
    reports = progress_lines(proc.stderr)
    assert len(reports) >= 3, "maxOffsetsPerTrigger = 7000 bounds each batch"
    assert all(r["numInputRows"] <= 7000 + 12 for r in reports)
    assert [r["batchId"] for r in reports] == list(range(len(reports)))
    assert sum(r["numInputRows"] for r in reports) == acked
    for r in reports:
        assert {"getOffsets", "decode", "query", "commit", "triggerExecution"} <= set(r["durationMs"])
        assert r["sources"][0]["endOffset"] and r["sources"][0]["startOffset"] is not None
    check_exactly_once(job, acked, malformed)
    alerts = check_alerts(job)
    assert sum(r["alerts"]["numOutputRows"] for r in reports) == alerts
    assert reports[0]["alerts"]["description"] == f"KafkaSink[{job.prefix}risk-alerts]"

    # Spark's checkpoint layout.
    checkpoint = tmp_path / "checkpoints" / "score-transactions"
    assert (checkpoint / "metadata").is_file() and (checkpoint / "sources" / "0" / "0").is_file()
    last = len(reports) - 1
    assert (checkpoint / "offsets" / str(last)).read_text().startswith("v1\n")
    assert (checkpoint / "commits" / str(last)).read_text().startswith("v1\n")
    assert (checkpoint / "progress" / str(last)).is_file()

    # Nothing new: a second bounded run reads nothing and writes nothing.
    again = job.run("--available-now")
    assert progress_lines(again.stderr) == []
    check_exactly_once(job, acked, malformed)

    # More events: the next run picks up exactly where the last one ended.
    summary2, _ = transactions_only(job, tmp_path, 5000, seed=12)
    job.run("--available-now")
    check_exactly_once(job, acked + acknowledged(summary2, job),
                       malformed + summary2["sources"][TRANSACTIONS_TOPIC]["malformed"])
    check_alerts(job)


def uncommitted_batches(checkpoint: Path) -> int:
    names = lambda d: {p.name for p in (checkpoint / d).iterdir()} if (checkpoint / d).exists() else set()
    return len(names("offsets") - names("commits"))


def crash_loop(job: StreamJob, tmp_path: Path, kills: int, storage_options: dict | None = None,
               checkpoint: Path | None = None) -> int:
    """Runs the job while the generator writes, kill -9ing it at random instants, then lets a last
    bounded run finish, and checks that every acknowledged record landed exactly once. Returns how
    many kills left a batch planned but not committed (when the checkpoint is a local folder)."""
    rng = random.Random(20261122)
    torn = 0
    summary_path, generator = transactions_only(job, tmp_path, 60000, "--rate", "3000", background=True)
    killed = 0
    # At least `kills` kills; with a local checkpoint, go on (up to three times as many) until
    # three of them landed inside a batch, so recovery from a torn batch is always exercised.
    while killed < kills or (checkpoint is not None and torn < 3 and killed < 3 * kills):
        proc = job.start()
        time.sleep(rng.uniform(0.5, 3.0))
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the job exited on its own ({proc.returncode}):\n{out}\n{err}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed += 1
        if checkpoint is not None:
            torn += uncommitted_batches(checkpoint) > 0
    assert generator.wait(timeout=300) == 0, generator.stderr.read()
    summary = read_json(summary_path)
    final = job.run("--available-now")
    check_exactly_once(job, acknowledged(summary, job), summary["sources"][TRANSACTIONS_TOPIC]["malformed"],
                       storage_options)
    check_alerts(job, storage_options, replays=True)
    return torn


def test_kill_9_at_random_instants_loses_and_duplicates_nothing_local(riskstream_bin, kafka_bootstrap, tmp_path):
    # No trigger: batches run back to back (and the next one is read while the last commits), so
    # kills often land inside one.
    job = StreamJob(riskstream_bin, kafka_bootstrap, str(tmp_path / "lake"), str(tmp_path / "checkpoints"),
                    extra_env={"RISKSTREAM_MAX_OFFSETS_PER_TRIGGER": "4000"}).without_trigger(tmp_path)
    torn = crash_loop(job, tmp_path, kills=20, checkpoint=tmp_path / "checkpoints" / "score-transactions")
    print(f"{torn} kills left a batch in flight")
    assert torn >= 3, "too few kills landed inside a batch: the test did not test recovery"


def test_kill_9_at_random_instants_loses_and_duplicates_nothing_s3(riskstream_bin, kafka_bootstrap, s3_endpoint,
                                                                  s3_bucket, tmp_path):
    env = s3_env(s3_endpoint)
    env["RISKSTREAM_MAX_OFFSETS_PER_TRIGGER"] = "4000"
    job = StreamJob(riskstream_bin, kafka_bootstrap, f"s3://{s3_bucket}/lake", f"s3://{s3_bucket}/checkpoints",
                    extra_env=env)
    crash_loop(job, tmp_path, kills=20, storage_options=s3_storage_options(s3_endpoint))


def test_sigterm_finishes_the_batch_in_flight_and_exits_0(riskstream_bin, kafka_bootstrap, tmp_path):
    job = StreamJob(riskstream_bin, kafka_bootstrap, str(tmp_path / "lake"), str(tmp_path / "checkpoints"),
                    extra_env={"RISKSTREAM_MAX_OFFSETS_PER_TRIGGER": "2000"})
    summary, _ = transactions_only(job, tmp_path, 12000)
    proc = job.start()
    checkpoint = tmp_path / "checkpoints" / "score-transactions"
    deadline = time.monotonic() + 120
    while not (checkpoint / "commits" / "1").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # Whatever batch was in flight committed: every offsets entry has its commit.
    offsets = sorted(int(p.name) for p in (checkpoint / "offsets").iterdir())
    commits = sorted(int(p.name) for p in (checkpoint / "commits").iterdir())
    assert offsets == commits and offsets
    # And a restart replays nothing: it goes on from the last commit to the end.
    rest = job.run("--available-now")
    assert "0 replayed" in rest.stdout
    check_exactly_once(job, acknowledged(summary, job), summary["sources"][TRANSACTIONS_TOPIC]["malformed"])
