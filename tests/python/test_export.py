"""`riskstream export` on constructed cases: labels that arrive after the cut-off are not used,
rows outside the range are not exported, negatives are down-sampled the same way every time, and
the manifest says which table versions the set came from."""

import json
import subprocess
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake

from conftest import S3_CREDENTIALS, run_riskstream, s3_env

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")


def build_lake(lake):
    ids = ["e1", "e2", "e3", "e4", "e5"] + [f"n{i}" for i in range(2000)]
    times = [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10), T0 - timedelta(hours=1), T0 + timedelta(hours=2)]
    times += [T0 + timedelta(seconds=3 * i) for i in range(2000)]
    features = pa.table({
        "event_id": ids,
        "event_time": pa.array(times, type=TS),
        "amount": [float(i) for i in range(len(ids))],
        "user_txn_5m": pa.array([i % 7 for i in range(len(ids))], type=pa.int64()),
    })
    write_deltalake(f"{lake}/tx_features", features)
    labels = pa.table({
        "event_id": ["e1", "e2", "e3"],
        "label": pa.array([1, 1, 0], type=pa.int32()),
        "label_time": pa.array([T0 + timedelta(minutes=30), T0 + timedelta(hours=3), T0 + timedelta(hours=1)], type=TS),
    })
    write_deltalake(f"{lake}/fraud_labels", labels.slice(0, 2))
    write_deltalake(f"{lake}/fraud_labels", labels.slice(2), mode="append")


def export(binary, lake, out, *extra, cutoff="2026-11-01T12:00:00Z", features="tx_features"):
    return subprocess.run(
        [str(binary), "export", "--lake", str(lake), "--features", features, "--labels", "fraud_labels",
         "--from", "2026-11-01T10:00:00Z", "--to", "2026-11-01T12:00:00Z", "--cutoff", cutoff,
         "--out", str(out), *extra],
        capture_output=True, text=True,
    )


def test_export_is_point_in_time_and_reproducible(riskstream_bin, tmp_path):
    lake = tmp_path / "lake"
    build_lake(lake)
    done = export(riskstream_bin, lake, tmp_path / "a", "--negative-rate", "0.5", "--seed", "3")
    assert done.returncode == 0, done.stderr
    rows = {r["event_id"]: r for r in pq.read_table(tmp_path / "a" / "data.parquet").to_pylist()}
    # e1's label arrived before the cut-off; e2's after it, so e2 is a negative (if sampled).
    assert rows["e1"]["label"] == 1 and rows["e1"]["weight"] == 1.0
    assert "e2" not in rows or (rows["e2"]["label"] == 0 and rows["e2"]["label_time"] is None)
    assert "e3" not in rows or rows["e3"]["label"] == 0
    # Outside [from, to): never exported.
    assert "e4" not in rows and "e5" not in rows
    negatives = [r for r in rows.values() if r["label"] == 0]
    assert 850 < len(negatives) < 1150, len(negatives)
    assert all(r["weight"] == 2.0 for r in negatives)
    # The last fifth of the range validates.
    split_at = T0 + timedelta(minutes=96)
    assert all((r["split"] == "validation") == (r["event_time"] >= split_at) for r in rows.values())

    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["features_table"] == {"name": "tx_features", "version": 0}
    assert manifest["labels_table"] == {"name": "fraud_labels", "version": 1}
    assert manifest["positives"] == 1 and manifest["rows"] == len(rows)
    assert manifest["negatives_kept"] + manifest["negatives_dropped"] == 2002
    assert manifest["train_rows"] + manifest["validation_rows"] == len(rows)
    assert manifest["features"] == ["amount", "user_txn_5m"]

    # The same export again keeps the same rows; another seed keeps others.
    again = export(riskstream_bin, lake, tmp_path / "b", "--negative-rate", "0.5", "--seed", "3")
    assert again.returncode == 0, again.stderr
    assert pq.read_table(tmp_path / "b" / "data.parquet").equals(pq.read_table(tmp_path / "a" / "data.parquet"))
    other = export(riskstream_bin, lake, tmp_path / "c", "--negative-rate", "0.5", "--seed", "4", "--csv")
    assert other.returncode == 0, other.stderr
    other_ids = set((tmp_path / "c" / "data.csv").read_text().splitlines()[1:])
    assert len(other_ids) > 800

    # With a later cut-off e2's label counts.
    later = export(riskstream_bin, lake, tmp_path / "d", cutoff="2026-11-01T13:30:00Z")
    assert later.returncode == 0, later.stderr
    rows = {r["event_id"]: r for r in pq.read_table(tmp_path / "d" / "data.parquet").to_pylist()}
    assert rows["e2"]["label"] == 1 and len(rows) == 2003


def test_export_names_what_is_wrong(riskstream_bin, tmp_path):
    lake = tmp_path / "lake"
    build_lake(lake)
    missing = export(riskstream_bin, lake, tmp_path / "x", features="nope")
    assert missing.returncode != 0 and "nope" in missing.stderr, missing.stderr
    backwards = subprocess.run(
        [str(riskstream_bin), "export", "--lake", str(lake), "--from", "2026-11-02T00:00:00Z", "--to", "2026-11-01T00:00:00Z",
         "--out", str(tmp_path / "y")], capture_output=True, text=True)
    assert backwards.returncode != 0 and "--from" in backwards.stderr


def build_training_lake(lake):
    """A feature table of make_data's rows, one a second from T0, and the positives' labels a
    minute after their events. Returns the labels."""
    from test_models import FEATURES, make_data

    X, y = make_data(41, 12000)
    times = [T0 + timedelta(seconds=i) for i in range(len(y))]
    columns = {"event_id": [f"x{i}" for i in range(len(y))], "event_time": pa.array(times, type=TS)}
    for i, name in enumerate(FEATURES):
        columns[name] = pa.array(X[:, i], mask=np.isnan(X[:, i]))
    write_deltalake(f"{lake}/tx_features", pa.table(columns))
    positives = [i for i in range(len(y)) if y[i] == 1]
    write_deltalake(f"{lake}/fraud_labels", pa.table({
        "event_id": [f"x{i}" for i in positives],
        "label": pa.array([1] * len(positives), type=pa.int32()),
        "label_time": pa.array([times[i] + timedelta(minutes=1) for i in positives], type=TS),
    }))
    return y


TRAINING_EXPORT = ["--features", "tx_features", "--labels", "fraud_labels", "--from", "2026-11-01T10:00:00Z",
                   "--to", "2026-11-01T14:00:00Z", "--cutoff", "2026-11-02T00:00:00Z", "--negative-rate", "0.25"]


def test_export_then_train_uses_the_split_features_and_weights(riskstream_bin, tmp_path):
    from test_models import FEATURES

    lake = tmp_path / "lake"
    y = build_training_lake(lake)
    done = subprocess.run(
        [str(riskstream_bin), "export", "--lake", str(lake), *TRAINING_EXPORT, "--out", str(tmp_path / "set")],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    exported = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert exported["features"] == FEATURES
    trained = subprocess.run(
        [str(riskstream_bin), "train", "--input", str(tmp_path / "set"), "--out", str(tmp_path / "model"),
         "--rounds", "20", "--forest-trees", "10"], capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    assert manifest["features"] == FEATURES, "the export's features, not its weight or label columns"
    training = manifest["training"]
    assert training["validation_rows"] == exported["validation_rows"]
    assert training["train_rows"] == exported["train_rows"]
    assert (training["split_column"], training["weight_column"]) == ("split", "weight")
    # Weighted, the sampled negatives count four times: the model starts from the stream's
    # label rate, not the sample's.
    base = float(json.loads((tmp_path / "model" / "gbdt.json").read_text())["learner"]["learner_model_param"]["base_score"].strip("[]"))
    # Training rows are the events before 13:12 (the last fifth of 10:00-14:00 validates).
    train_rate = y[:11520].mean()
    sampled_rate = train_rate / (train_rate + 0.25 * (1 - train_rate))
    assert abs(base - train_rate) < 0.01, (base, train_rate, sampled_rate)


def test_export_to_s3_and_train_from_it(riskstream_bin, s3_endpoint, s3_bucket, tmp_path):
    """The same export written to S3 as to a local folder, and a model trained from either is the
    same model."""
    import boto3

    lake = tmp_path / "lake"
    build_training_lake(lake)
    env = s3_env(s3_endpoint)
    remote = f"s3://{s3_bucket}/exports/set"
    run_riskstream(riskstream_bin, "export", "--lake", str(lake), *TRAINING_EXPORT, "--out", str(tmp_path / "set"))
    run_riskstream(riskstream_bin, "export", "--lake", str(lake), *TRAINING_EXPORT, "--out", remote, env=env)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                      region_name=S3_CREDENTIALS["AWS_REGION"])
    def remote_file(name):
        return s3.get_object(Bucket=s3_bucket, Key=f"exports/set/{name}")["Body"].read()
    local_manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    remote_manifest = json.loads(remote_file("manifest.json"))
    assert remote_manifest == local_manifest
    assert remote_manifest["rows"] > 1000
    assert pq.read_table(pa.BufferReader(remote_file("data.parquet"))).equals(
        pq.read_table(tmp_path / "set" / "data.parquet"))
    # An export is written once: the folder is now taken.
    again = run_riskstream(riskstream_bin, "export", "--lake", str(lake), *TRAINING_EXPORT, "--out", remote,
                           env=env, check=False)
    assert again.returncode != 0 and "not empty" in again.stderr, again.stderr

    train = ["--rounds", "20", "--forest-trees", "10"]
    run_riskstream(riskstream_bin, "train", "--input", str(tmp_path / "set"), "--out", str(tmp_path / "local"), *train)
    run_riskstream(riskstream_bin, "train", "--input", remote, "--out", str(tmp_path / "remote"), *train, env=env)
    for name in ("gbdt.json", "isolation_forest.json"):
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    remote_model = json.loads((tmp_path / "remote" / "model.json").read_text())
    assert remote_model["metrics"] == json.loads((tmp_path / "local" / "model.json").read_text())["metrics"]
    missing = run_riskstream(riskstream_bin, "train", "--input", f"s3://{s3_bucket}/exports/none",
                             "--out", str(tmp_path / "none"), env=env, check=False)
    assert missing.returncode != 0 and "manifest.json" in missing.stderr, missing.stderr
