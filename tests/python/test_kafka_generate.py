"""The generator against a real Kafka-protocol broker, read back by an independent client."""

import json
from datetime import datetime
import uuid
from collections import defaultdict

from kafka.partitioner.default import murmur2

from conftest import consume_all, read_json, run_riskstream

EVENT_TOPICS = {"financial-transactions": 12, "insurance-claims": 12, "iot-telemetry": 8}
LABELS_TOPIC = "fraud-labels"


def test_generate_100k_events_read_back_by_kafka_python(riskstream_bin, kafka_bootstrap, tmp_path):
    summary_path = tmp_path / "summary.json"
    # A prefix of our own: topics are never shared with another test or run.
    prefix = f"t{uuid.uuid4().hex[:10]}."
    run_riskstream(riskstream_bin, "generate", "--to", f"kafka://{kafka_bootstrap}", "--count", "100000",
                   "--seed", "7", "--quiet", "--summary", str(summary_path), "--topic-prefix", prefix,
                   "--start-time", "2026-11-01T00:00:00Z")
    summary = read_json(summary_path)
    assert summary["events"] == 100000
    delivery = {d["topic"]: d for d in summary["delivery"]}
    assert sum(d["failed"] for d in delivery.values()) == 0

    for name, partitions in EVENT_TOPICS.items():
        topic = prefix + name
        expected = delivery[topic]["acknowledged"]
        assert expected == summary["sources"][name]["events"] > 0
        records, n_partitions = consume_all(kafka_bootstrap, topic, expected)
        assert n_partitions == partitions, topic
        assert len(records) == expected, topic

        # Keys route by entity: one partition per key, the one Kafka's default partitioner picks.
        partitions_of_key = defaultdict(set)
        for r in records:
            partitions_of_key[r.key].add(r.partition)
            assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % partitions
        assert all(len(p) == 1 for p in partitions_of_key.values())

        # Every value parses, except exactly the malformed ones the generator reports.
        bad = 0
        for r in records:
            try:
                event = json.loads(r.value)
                assert isinstance(event, dict)
                assert event["event_id"]
                datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
            except (ValueError, KeyError, AssertionError, UnicodeDecodeError):
                bad += 1
        assert bad == summary["sources"][name]["malformed"], topic

    labels_topic = prefix + LABELS_TOPIC
    labels, _ = consume_all(kafka_bootstrap, labels_topic, delivery[labels_topic]["acknowledged"])
    assert len(labels) == summary["labels"] > 0
    positives = sum(1 for r in labels if json.loads(r.value)["label"] == 1)
    assert positives == summary["positive_labels"]


def test_unreachable_broker_fails_fast_naming_the_address(riskstream_bin):
    proc = run_riskstream(riskstream_bin, "generate", "--to", "kafka://127.0.0.1:1", "--count", "10",
                          check=False)
    assert proc.returncode != 0
    assert "127.0.0.1:1" in proc.stderr
