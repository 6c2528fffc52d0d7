"""The embedded demo's lake, read by an outside reader (Python deltalake), locally and on S3."""

import json

import pyarrow.compute as pc
from deltalake import DeltaTable

from conftest import S3_CREDENTIALS, read_json, run_riskstream, s3_env

RISK_SCORES_COLUMNS = ["event_id", "event_type", "entity_id", "event_time", "risk_score", "severity",
                       "reasons", "model_version", "rules_score", "model_score", "gbdt_score",
                       "anomaly_score", "top_features", "source_topic", "source_partition",
                       "source_offset", "batch_id", "scored_at"]


def check_lake(table_uri, storage_options, summary):
    scores = DeltaTable(f"{table_uri}/risk_scores", storage_options=storage_options).to_pyarrow_table()
    assert scores.column_names == RISK_SCORES_COLUMNS
    assert scores.num_rows == summary["valid_events"]
    assert scores.column("event_id").to_pylist().__len__() == len(set(scores.column("event_id").to_pylist()))
    # Each row names the record it was read from, and no record is scored twice.
    positions = set(zip(scores.column("source_topic").to_pylist(), scores.column("source_partition").to_pylist(),
                        scores.column("source_offset").to_pylist()))
    assert len(positions) == scores.num_rows
    assert {topic for topic, _, _ in positions} == {"financial-transactions", "insurance-claims", "iot-telemetry"}
    assert set(scores.column("event_type").to_pylist()) == {"transaction", "claim", "telemetry"}
    assert set(scores.column("severity").to_pylist()) <= {"low", "medium", "high", "critical"}
    assert pc.min(scores.column("risk_score")).as_py() >= 0.0
    assert pc.max(scores.column("risk_score")).as_py() <= 1.0
    assert str(scores.schema.field("event_time").type).startswith("timestamp[us")
    # Scored by the shipped models (jobs/models), whose parts are in each row.
    assert set(scores.column("model_version").to_pylist()) == {"transactions/1", "claims/1", "telemetry/1"}
    assert scores.column("gbdt_score").null_count == 0

    dead = DeltaTable(f"{table_uri}/dead_letters", storage_options=storage_options).to_pyarrow_table()
    assert dead.num_rows == summary["malformed"] > 0
    assert all(v is not None for v in dead.column("value").to_pylist())
    assert all(e for e in dead.column("error").to_pylist())

    labels = DeltaTable(f"{table_uri}/fraud_labels", storage_options=storage_options).to_pyarrow_table()
    assert labels.num_rows == summary["labels"] > 0
    # Every label's event was scored (malformed events get no label).
    scored_ids = set(scores.column("event_id").to_pylist())
    assert set(labels.column("event_id").to_pylist()) <= scored_ids
    return scores


def test_demo_writes_contract_tables_and_a_rerun_writes_nothing(riskstream_bin, tmp_path):
    lake = tmp_path / "lake"
    # No --start-time: the default must make the demo reproducible, as the README promises.
    args = ["demo", "--events", "30000", "--batch-events", "7000", "--seed", "11", "--lake", str(lake)]
    run_riskstream(riskstream_bin, *args, "--summary", str(tmp_path / "first.json"))
    first = read_json(tmp_path / "first.json")
    assert first["events"] == 30000
    assert first["rows_written"]["risk_scores"] == first["valid_events"]
    check_lake(str(lake), None, first)

    # Same seed and options: every job resumes at the end of its topic, nothing is appended.
    run_riskstream(riskstream_bin, *args, "--summary", str(tmp_path / "second.json"))
    second = read_json(tmp_path / "second.json")
    assert all(job["batches"] > 0 for job in first["jobs"])
    assert all(job["batches"] == 0 for job in second["jobs"])
    assert second["rows_written"] == {"risk_scores": 0, "dead_letters": 0, "fraud_labels": 0}
    check_lake(str(lake), None, first)

    # The SQL command sees the same rows.
    out = run_riskstream(riskstream_bin, "sql", "--lake", str(lake), "--format", "csv",
                         "SELECT count(*) AS n FROM risk_scores").stdout.splitlines()
    assert out == ["n", str(first["valid_events"])]


def demo_on_s3(riskstream_bin, s3_endpoint, s3_bucket, tmp_path, *args):
    """Runs the demo with `args` into a lake on the S3 server; checks the lake as an outside
    reader sees it and returns its URI and the demo's summary."""
    uri = f"s3://{s3_bucket}/lake"
    run_riskstream(riskstream_bin, "demo", *args, "--lake", uri, "--summary", str(tmp_path / "s3.json"),
                   env=s3_env(s3_endpoint))
    summary = read_json(tmp_path / "s3.json")
    # The variables a command reads are the storage options an outside reader takes.
    check_lake(uri, s3_env(s3_endpoint), summary)
    return uri, summary


def test_demo_on_s3(riskstream_bin, s3_endpoint, s3_bucket, tmp_path):
    env = s3_env(s3_endpoint)
    uri, summary = demo_on_s3(riskstream_bin, s3_endpoint, s3_bucket, tmp_path,
                              "--events", "8000", "--batch-events", "3000", "--seed", "5")
    out = run_riskstream(riskstream_bin, "sql", "--lake", uri, "--format", "csv",
                         "SELECT count(*) AS n FROM dead_letters", env=env).stdout.splitlines()
    assert out == ["n", str(summary["malformed"])]


def test_unwritable_lake_fails_naming_the_path(riskstream_bin):
    proc = run_riskstream(riskstream_bin, "demo", "--events", "10", "--lake", "/proc/no-lake-here", check=False)
    assert proc.returncode != 0
    assert "/proc/no-lake-here" in proc.stderr


def test_sql_on_a_missing_lake_names_it_and_creates_nothing(riskstream_bin, tmp_path):
    missing = tmp_path / "no-such-lake"
    proc = run_riskstream(riskstream_bin, "sql", "--lake", str(missing), "SELECT 1", check=False)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr
    assert not missing.exists()


def test_bad_values_fail_naming_the_flag(riskstream_bin, tmp_path):
    for args, flag in [(["generate", "--rate", "-5"], "--rate"),
                       (["generate", "--to", "http://x"], "--to"),
                       (["demo", "--fraud-rate", "2", "--lake", str(tmp_path / "l")], "--fraud-rate"),
                       (["generate", "--no-such-flag"], "--no-such-flag")]:
        proc = run_riskstream(riskstream_bin, *args, check=False)
        assert proc.returncode != 0, args
        assert flag in proc.stderr, (args, proc.stderr)


def test_large_batches_on_s3_are_written_by_a_writer_per_core(riskstream_bin, s3_endpoint, s3_bucket, tmp_path):
    """A batch of 200,000 rows or more is written by one writer per core, each to its own file,
    all committed in one table version; an outside reader sees every row once."""
    import os

    import boto3

    demo_on_s3(riskstream_bin, s3_endpoint, s3_bucket, tmp_path,
               "--events", "550000", "--batch-events", "300000", "--seed", "3")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                      region_name=S3_CREDENTIALS["AWS_REGION"])
    listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="lake/risk_scores/_delta_log/")
    commits = [o["Key"] for o in listed["Contents"] if o["Key"].endswith(".json")]
    most = 0
    for key in commits:
        body = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read().decode()
        actions = [json.loads(line) for line in body.splitlines() if line]
        adds = [a["add"] for a in actions if "add" in a]
        if adds:
            # Every file of a commit has its statistics, and the commit carries its batch's txn.
            assert all(json.loads(a["stats"])["numRecords"] > 0 for a in adds), key
            assert any("txn" in a for a in actions), key
        most = max(most, len(adds))
    assert most == min(os.cpu_count() or 1, 2), most
