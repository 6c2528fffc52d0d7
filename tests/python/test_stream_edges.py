"""`riskstream run` at the edges: malformed messages, startingOffsets JSON, data loss, bad specs,
and two processes splitting one topic's partitions into one table."""

import json
from pathlib import Path
import subprocess
import uuid

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from conftest import ROOT
from streamjobs import StreamJob, progress_lines

# kafka-python 3 makes producers idempotent by default; tansu 0.6 aborts its storage on an
# idempotent producer's retry (InitProducer with an existing id is `todo!()` there), so the test
# producers are plain at-least-once ones, like Spark's.

VALID = {
    "event_id": "", "event_type": "transaction", "event_time": "2026-11-22T06:18:51.225Z", "user_id": "u_1",
    "card_id": "c_1", "merchant_id": "m_1", "merchant_name": "Lumen", "mcc": "5815",
    "merchant_category": "digital_media", "amount": 26.83, "currency": "EUR", "channel": "ecommerce",
    "payment_method": "card_not_present", "card_type": "credit", "device_id": "d_1", "ip_address": "93.146.100.97",
    "latitude": 41.86, "longitude": 12.58, "city": "Rome", "country": "IT", "card_country": "IT",
    "account_age_days": 3967, "email_domain": "gmail.com",
}


def valid(event_id: str) -> bytes:
    return json.dumps(dict(VALID, event_id=event_id)).encode()


def write_spec(tmp_path, topic: str, bootstrap: str, name: str = "edge", sql: Path | None = None,
               **options) -> str:
    """A spec over `topic` into a lake under tmp_path, scoring as the shipped transactions job
    does (or running `sql`, a query without state); `options` become readStream options."""
    extra = "".join(f'{k} = {json.dumps(v)}\n' for k, v in options.items())
    spec = tmp_path / f"{name}.toml"
    query = f"""schema = "transactions"
file = "{ROOT}/sql/scoring/transactions.sql"
views = [{{ name = "transaction_features", file = "{ROOT}/sql/features/transactions.sql" }}]
watermark = {{ column = "event_time", delay = "1 hour" }}
emit = "onArrival"
metadata = {{ topic = "source_topic", partition = "source_partition", offset = "source_offset" }}
tables = [{{ name = "blocked_entities", path = "{tmp_path}/lake/blocked_entities" }}]
""" if sql is None else f"""schema = "transactions"
file = "{sql}"
"""
    models = f"""
[block]
where = "risk_score >= 0.95 AND NOT array_has(reasons, 'blocked_entity')"
path = "{tmp_path}/lake/blocked_entities"

[[models]]
function = "transaction_model"
lake = "{tmp_path}/lake"
name = "transactions"
default = "{ROOT}/jobs/models/transactions"
""" if sql is None else ""
    spec.write_text(f"""
name = "{name}"
[readStream]
format = "kafka"
[readStream.options]
"kafka.bootstrap.servers" = "{bootstrap}"
subscribe = "{topic}"
{extra}
[query]
{query}[writeStream]
format = "delta"
partitionBy = ["event_type"]
[writeStream.options]
path = "{tmp_path}/lake/risk_scores"
checkpointLocation = "{tmp_path}/checkpoints/{name}"
batchIdColumn = "batch_id"
processingTimeColumn = "scored_at"
{models}""")
    return str(spec)


def run(binary, spec: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(binary), "run", spec, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc


def new_topic(bootstrap: str, partitions: int) -> str:
    name = f"edge-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1)])
    admin.close()
    return name


def table(tmp_path, name: str):
    from deltalake import DeltaTable
    return DeltaTable(f"{tmp_path}/lake/{name}").to_pyarrow_table()


def test_malformed_messages_become_dead_letters_and_neighbours_are_scored(riskstream_bin, kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 1)
    bad = {
        "truncated JSON": valid("x")[:40],
        "wrong type": json.dumps(dict(VALID, event_id="w", amount="lots")).encode(),
        "binary garbage": bytes(range(256)) * 4,
        # 5,000,000 bytes: tansu 0.6 stores but never serves a record over 5 MiB.
        "5 MB value": b'{"event_id":"' + b"a" * 5_000_000 + b'"',
        "empty value": b"",
        "missing required field": json.dumps({k: v for k, v in VALID.items() if k != "event_time"}).encode(),
    }
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=8 * 1024 * 1024, linger_ms=5,
                             enable_idempotence=False)
    sent = []  # (key, value) in offset order
    for i, value in enumerate(bad.values()):
        for message in [(f"k{i}".encode(), valid(f"before-{i}")), (f"k{i}".encode(), value)]:
            sent.append(message)
    sent.append((None, valid("null-key")))  # a null key is fine
    for key, value in sent:
        producer.send(topic, key=key, value=value).get(timeout=60)
    producer.close()

    spec = write_spec(tmp_path, topic, kafka_bootstrap, startingOffsets="earliest")
    proc = run(riskstream_bin, spec, "--available-now")
    reports = progress_lines(proc.stderr)
    assert sum(r["numInputRows"] for r in reports) == len(sent)

    scores = table(tmp_path, "risk_scores")
    assert sorted(scores.column("event_id").to_pylist()) == sorted(
        [f"before-{i}" for i in range(len(bad))] + ["null-key"])
    dead = table(tmp_path, "dead_letters").to_pylist()
    assert len(dead) == len(bad)
    by_offset = {d["offset"]: d for d in dead}
    for offset, (key, value) in enumerate(sent):
        if offset in by_offset:
            d = by_offset[offset]
            assert d["topic"] == topic and d["partition"] == 0
            assert d["value"] == value and d["key"] == key
            assert d["error"], "every dead letter says why"
            assert d["timestamp"] is not None and d["batch_id"] == 0
    wrong_type = next(d for d in dead if d["value"] == bad["wrong type"])
    assert "amount" in wrong_type["error"]


def test_on_error_fail_stops_before_the_batch_commits(riskstream_bin, kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    for value in [valid("a"), b"{not json", valid("b")]:
        producer.send(topic, value=value).get(timeout=60)
    producer.close()
    spec = write_spec(tmp_path, topic, kafka_bootstrap, startingOffsets="earliest")
    text = open(spec).read().replace("[writeStream]", 'onError = "fail"\n[writeStream]')
    open(spec, "w").write(text)
    proc = run(riskstream_bin, spec, "--available-now", check=False)
    assert proc.returncode != 0
    assert f"{topic} partition 0 offset 1" in proc.stderr and "onError" in proc.stderr
    assert not (tmp_path / "checkpoints" / "edge" / "commits" / "0").exists()


def test_starting_offsets_json_and_max_offsets_per_trigger(riskstream_bin, kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    for p in range(2):
        for i in range(50):
            producer.send(topic, value=valid(f"p{p}-{i}"), partition=p).get(timeout=60)
    producer.close()
    # Partition 0 from offset 30, partition 1 from the start (-2): 20 + 50 records.
    spec = write_spec(tmp_path, topic, kafka_bootstrap,
                      startingOffsets=json.dumps({topic: {"0": 30, "1": -2}}), maxOffsetsPerTrigger=35)
    proc = run(riskstream_bin, spec, "--available-now")
    reports = progress_lines(proc.stderr)
    assert [r["numInputRows"] for r in reports] == [35, 35]
    first = reports[0]["sources"][0]
    assert first["startOffset"] == {topic: {"0": 30, "1": 0}}
    # 35 split by backlog (20 and 50): 10 and 25.
    assert first["endOffset"] == {topic: {"0": 40, "1": 25}}
    ids = set(table(tmp_path, "risk_scores").column("event_id").to_pylist())
    assert ids == {f"p0-{i}" for i in range(30, 50)} | {f"p1-{i}" for i in range(50)}


def test_fail_on_data_loss_both_ways(riskstream_bin, kafka_bootstrap, tmp_path):
    topic = new_topic(kafka_bootstrap, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=False)
    for i in range(20):
        producer.send(topic, value=valid(f"old-{i}")).get(timeout=60)
    spec = write_spec(tmp_path, topic, kafka_bootstrap, startingOffsets="earliest")
    run(riskstream_bin, spec, "--available-now")

    # The topic is recreated: offset 20 no longer exists, the log starts over at 0.
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.delete_topics([topic])
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    for i in range(5):
        producer.send(topic, value=valid(f"new-{i}")).get(timeout=60)
    producer.close()

    proc = run(riskstream_bin, spec, "--available-now", check=False)
    assert proc.returncode != 0
    assert "data loss" in proc.stderr and f"{topic} partition 0" in proc.stderr
    assert "failOnDataLoss" in proc.stderr

    text = open(spec).read().replace('startingOffsets = "earliest"',
                                     'startingOffsets = "earliest"\nfailOnDataLoss = false')
    open(spec, "w").write(text)
    proc = run(riskstream_bin, spec, "--available-now")
    assert "data loss" in proc.stderr
    ids = set(table(tmp_path, "risk_scores").column("event_id").to_pylist())
    assert ids == {f"old-{i}" for i in range(20)} | {f"new-{i}" for i in range(5)}


def test_two_processes_split_partitions_into_one_table_exactly_once(riskstream_bin, kafka_bootstrap, tmp_path):
    job = StreamJob(riskstream_bin, kafka_bootstrap, str(tmp_path / "lake"), str(tmp_path / "checkpoints"),
                    extra_env={"RISKSTREAM_MAX_OFFSETS_PER_TRIGGER": "3000"})
    summary = tmp_path / "generate.json"
    job.generate("--source", "transactions", "--count", "15000", "--seed", "5", "--malformed", "0", summary=summary)
    first = subprocess.Popen(job.command("--available-now", "--partitions", "0-5"), env=job.env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(job.command("--available-now", "--partitions", "6-11"), env=job.env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for proc in (first, second):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    ids = job.table("risk_scores").column("event_id").to_pylist()
    assert len(ids) == len(set(ids)) == 15000
    # And running both again writes nothing.
    job.run("--available-now", "--partitions", "0-5")
    job.run("--available-now", "--partitions", "6-11")
    assert len(job.table("risk_scores")) == 15000


def test_bad_specs_fail_naming_file_and_key(riskstream_bin, kafka_bootstrap, tmp_path):
    spec = write_spec(tmp_path, "t", kafka_bootstrap, startingOffsets="earliest", subscrbe="t")
    proc = run(riskstream_bin, spec, check=False)
    assert proc.returncode != 0
    assert spec in proc.stderr and "readStream.options.subscrbe" in proc.stderr

    sql = tmp_path / "bad.sql"
    sql.write_text("SELECT no_such_column FROM transactions")
    spec = write_spec(tmp_path, "t", kafka_bootstrap, name="badsql", sql=sql)
    proc = run(riskstream_bin, spec, check=False)
    assert proc.returncode != 0
    assert str(sql) in proc.stderr and "no_such_column" in proc.stderr

    proc = run(riskstream_bin, str(tmp_path / "missing.toml"), check=False)
    assert proc.returncode != 0 and "missing.toml" in proc.stderr


# Rules over each event's own fields, with no state: the same on either path.
PER_EVENT_SQL = """SELECT
    event_id,
    'transaction' AS event_type,
    user_id AS entity_id,
    event_time,
    r['score'] AS risk_score,
    risk_severity(r['score']) AS severity,
    r['reasons'] AS reasons
FROM (
    SELECT *, transaction_rules(
        false, false, false, false, false, amount >= 2000, card_country <> country,
        (CAST(date_part('hour', event_time) AS INT) + 48) % 24 < 5,
        merchant_category IN ('electronics', 'jewelry', 'gambling'), account_age_days < 30,
        email_domain IN ('mailinator.com', 'tempmail.io', 'guerrillamail.com'), false
    ) AS r
    FROM transactions
)
"""

TRANSACTIONS_DDL = (
    "event_id STRING, event_type STRING, event_time TIMESTAMP, user_id STRING, card_id STRING, "
    "merchant_id STRING, merchant_name STRING, mcc STRING, merchant_category STRING, amount DOUBLE, "
    "currency STRING, channel STRING, payment_method STRING, card_type STRING, device_id STRING, "
    "ip_address STRING, latitude DOUBLE, longitude DOUBLE, city STRING, country STRING, card_country STRING, "
    "account_age_days BIGINT, email_domain STRING"
)


def test_spark_style_query_over_raw_kafka_columns_matches_the_fast_path(riskstream_bin, kafka_bootstrap, tmp_path):
    """A per-event query over a view built with from_json(CAST(value AS STRING), ...) from Spark's
    raw Kafka columns gives the same rows as over the declared-schema fast path."""
    job = StreamJob(riskstream_bin, kafka_bootstrap, str(tmp_path / "fast"), str(tmp_path / "checkpoints"))
    job.generate("--source", "transactions", "--count", "5000", "--seed", "9", "--malformed", "0")
    topic = job.prefix + "financial-transactions"
    fast_sql = tmp_path / "fast.sql"
    fast_sql.write_text(PER_EVENT_SQL)
    spec = write_spec(tmp_path, topic, kafka_bootstrap, name="fast", sql=fast_sql, startingOffsets="earliest")
    text = open(spec).read().replace(f"{tmp_path}/lake/", f"{tmp_path}/fast-lake/")
    open(spec, "w").write(text)
    run(riskstream_bin, spec, "--available-now")
    from deltalake import DeltaTable
    fast = DeltaTable(str(tmp_path / "fast-lake" / "risk_scores")).to_pyarrow_table().sort_by("event_id")

    columns = ", ".join(f"e.{c.split()[0]} AS {c.split()[0]}" for c in TRANSACTIONS_DDL.split(", "))
    sql = tmp_path / "raw.sql"
    sql.write_text(
        "WITH transactions AS (\n"
        f"    SELECT {columns}\n"
        f"    FROM (SELECT from_json(CAST(value AS STRING), '{TRANSACTIONS_DDL}') AS e FROM kafka)\n"
        "    WHERE e IS NOT NULL\n)\n" + PER_EVENT_SQL)
    spec = write_spec(tmp_path, topic, kafka_bootstrap, name="raw", sql=sql, startingOffsets="earliest")
    text = open(spec).read().replace('schema = "transactions"\n', "")
    open(spec, "w").write(text)
    run(riskstream_bin, spec, "--available-now")
    raw = table(tmp_path, "risk_scores").sort_by("event_id")

    assert raw.num_rows == fast.num_rows == 5000
    for column in raw.column_names:
        if column not in ("batch_id", "scored_at"):
            assert raw.column(column).to_pylist() == fast.column(column).to_pylist(), column