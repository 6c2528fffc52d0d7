"""Helpers for tests of `riskstream run`: topics of their own, the shipped specs pointed at them
through the environment, and ground truth read back from Kafka by an independent client."""

from collections import Counter
import json
import os
import subprocess
import uuid
from pathlib import Path

from deltalake import DeltaTable

from conftest import ROOT, S3_CREDENTIALS, consume_all

SPECS = ROOT / "jobs" / "specs"
TRANSACTIONS_TOPIC = "financial-transactions"


class StreamJob:
    """One job spec run against a test broker, lake and checkpoint folder."""

    def __init__(self, binary: Path, bootstrap: str, lake: str, checkpoints: str, spec: str = "transactions",
                 extra_env: dict | None = None):
        self.binary = binary
        self.bootstrap = bootstrap
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self.lake = lake
        self.checkpoints = checkpoints
        self.spec = SPECS / f"{spec}.toml"
        self.env = dict(os.environ)
        self.env.update({
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "RISKSTREAM_TOPIC_PREFIX": self.prefix,
            "RISKSTREAM_LAKE": lake,
            "RISKSTREAM_CHECKPOINTS": checkpoints,
        })
        if extra_env:
            self.env.update(extra_env)

    def without_trigger(self, folder: Path) -> "StreamJob":
        """Runs a copy of the spec with no trigger: each batch starts as soon as the last ends."""
        text = self.spec.read_text()
        lines = [line for line in text.splitlines() if not line.startswith("trigger = ")]
        assert len(lines) == len(text.splitlines()) - 1, "the spec has one trigger line"
        copy = folder / f"{self.spec.stem}-no-trigger.toml"
        copy.write_text("\n".join(lines) + "\n")
        self.spec = copy
        return self

    def generate(self, *args: str, background: bool = False, summary: Path | None = None):
        cmd = [str(self.binary), "generate", "--to", f"kafka://{self.bootstrap}", "--topic-prefix", self.prefix,
               "--quiet", "--start-time", "2026-11-01T00:00:00Z", *args]
        if summary:
            cmd += ["--summary", str(summary)]
        if background:
            return subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc

    def command(self, *args: str) -> list[str]:
        return [str(self.binary), "run", str(self.spec), *args]

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), env=self.env, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.command(*args), env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=900)
        if check:
            assert proc.returncode == 0, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def table(self, name: str, storage_options: dict | None = None):
        return DeltaTable(f"{self.lake}/{name}", storage_options=storage_options).to_pyarrow_table()


def progress_lines(stderr: str) -> list[dict]:
    """The StreamingQueryProgress JSON lines a run logged."""
    out = []
    marker = "riskstream::progress: "
    for line in stderr.splitlines():
        start = line.find(marker)
        if start >= 0:
            out.append(json.loads(line[start + len(marker):]))
    return out


def check_exactly_once(job: StreamJob, acknowledged: int, malformed: int, storage_options: dict | None = None):
    """Every record the producer got acknowledged is in the lake exactly once: as a score when it
    decodes, as a dead letter when it does not: each score row names its record (topic,
    partition, offset) and carries that record's event id."""
    topic = job.prefix + TRANSACTIONS_TOPIC
    scores = job.table("risk_scores", storage_options)
    dead = job.table("dead_letters", storage_options)
    dead = dead.filter(pc_equal(dead["topic"], topic))
    dead_keys = list(zip(dead.column("partition").to_pylist(), dead.column("offset").to_pylist()))
    assert len(dead_keys) == len(set(dead_keys)), "a dead letter was written twice"
    # Each score names the record it was read from. The producer is at least once (tansu cannot
    # take an idempotent one), so under load the topic can hold an acknowledged message twice, at
    # two offsets: each record is then scored, or set aside, once.
    assert set(scores.column("source_topic").to_pylist()) == {topic}
    scored = list(zip(scores.column("source_partition").to_pylist(), scores.column("source_offset").to_pylist()))
    assert len(scored) == len(set(scored)), "a record was scored twice"
    records, _ = consume_all(job.bootstrap, topic, acknowledged, drain=True)
    copies = len(records) - acknowledged
    assert copies >= 0
    assert malformed <= len(dead_keys) <= malformed + copies, (len(dead_keys), malformed, copies)
    dead_set = set(dead_keys)
    in_topic = {(r.partition, r.offset): json.loads(r.value)["event_id"] for r in records
                if (r.partition, r.offset) not in dead_set}
    assert len(in_topic) + len(dead_keys) == len(records), "a dead letter is not a record of the topic"
    score_of = dict(zip(scored, scores.column("event_id").to_pylist()))
    assert score_of == in_topic, "a record was not scored, or scored as another event"


ALERTS_TOPIC = "risk-alerts"
ALERT_SEVERITIES = ("high", "critical")


def check_alerts(job: StreamJob, storage_options: dict | None = None, replays: bool = False) -> int:
    """Every high or critical score is on the alerts topic as JSON equal to its row in the table.
    Without `replays`, each exactly once; with them (after crashes), at least once, and an alert
    seen twice was published twice by one batch: its replay. The alerts table holds each exactly
    once, replays or not. Returns how many alerts there are on the topic."""
    import pyarrow.compute as pc

    scores = job.table("risk_scores", storage_options)
    scores = scores.filter(pc.is_in(scores["severity"], value_set=pa_array(ALERT_SEVERITIES)))
    # Per event, its score rows: one per record, and an at-least-once producer can store an
    # event twice (see check_exactly_once), each copy scored with the other in its history.
    expected: dict[str, list[dict]] = {}
    for row in scores.to_pylist():
        expected.setdefault(row["event_id"], []).append(row)
    rows = sum(len(v) for v in expected.values())
    assert expected, "no high or critical scores: the test would not test alerts"
    records, _ = consume_all(job.bootstrap, job.prefix + ALERTS_TOPIC, rows, drain=True)
    seen: dict[str, set[str]] = {}
    for record in records:
        alert = json.loads(record.value)
        headers = dict(record.headers)
        batch = headers["riskstream.batchId"].decode()
        candidates = expected.get(alert["event_id"])
        assert candidates, f"an alert for a score that is not high or critical: {alert}"
        assert any(
            record.key.decode() == row["entity_id"] and alert["severity"] == row["severity"]
            and alert["risk_score"] == row["risk_score"] and int(batch) == row["batch_id"]
            for row in candidates
        ), f"an alert equal to its score row, naming the batch that scored it: {alert}"
        seen.setdefault(alert["event_id"], set()).add(batch)
    assert set(seen) == set(expected), f"{len(set(expected) - set(seen))} high or critical scores have no alert"
    table = job.table("alerts", storage_options).to_pylist()
    assert Counter(r["event_id"] for r in table) == Counter({k: len(v) for k, v in expected.items()}), \
        "the alerts table holds each alert once"
    for r in table:
        assert r in expected[r["event_id"]], "an alert row equals its score row"
    if not replays:
        assert len(records) == rows, "an alert was published twice without a replay"
    return len(records)


def pa_array(values):
    import pyarrow as pa
    return pa.array(values)


def pc_equal(column, value):
    import pyarrow.compute as pc
    return pc.equal(column, value)


def s3_storage_options(endpoint: str) -> dict:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": S3_CREDENTIALS["AWS_REGION"]}
