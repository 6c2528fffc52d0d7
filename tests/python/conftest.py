"""Shared fixtures: the riskstream binary and the loopback services started by
scripts/test-services.sh. A missing service is an error, never a skip: CI must not pass by
testing less."""

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests through scripts/test.sh, which starts the services")
    return value


@pytest.fixture(scope="session")
def riskstream_bin() -> Path:
    path = os.environ.get("RISKSTREAM_BIN")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
        path = str(Path(target) / "debug" / "riskstream")
    if not Path(path).exists():
        pytest.fail(f"riskstream binary not found at {path}: build it first (scripts/test.sh does)")
    return Path(path)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return _required_env("RISKSTREAM_TEST_KAFKA")


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    return _required_env("RISKSTREAM_TEST_S3_ENDPOINT")


S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "riskstream-test",
    "AWS_SECRET_ACCESS_KEY": "riskstream-test-secret",
    "AWS_REGION": "us-east-1",
}


def s3_env(endpoint: str) -> dict:
    """The environment a riskstream command needs to reach the test S3 server."""
    return dict(S3_CREDENTIALS, AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true")


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket on the S3 server, deleted (with its objects) afterwards."""
    import boto3

    s3 = boto3.resource("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                        region_name=S3_CREDENTIALS["AWS_REGION"])
    name = f"riskstream-test-{uuid.uuid4().hex[:12]}"
    bucket = s3.create_bucket(Bucket=name)
    yield name
    bucket.objects.all().delete()
    bucket.delete()


def run_riskstream(binary: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run([str(binary), *args], capture_output=True, text=True, env=full_env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"riskstream {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 120.0, drain: bool = False):
    """Reads every record of `topic` from the beginning until `expected` have arrived; with
    `drain`, goes on until a poll finds nothing more (for topics that may hold repeats)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records = []
    deadline = time.monotonic() + timeout_s
    while len(records) < expected and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=1000, max_records=50000)
        for recs in batch.values():
            records.extend(recs)
    while drain and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=2000, max_records=50000)
        if not batch:
            break
        for recs in batch.values():
            records.extend(recs)
    consumer.close()
    return records, len(partitions)
