"""The compose stack's topology as local processes (scripts/local-stack.sh): generator, broker, S3
server, the three scoring jobs and the Flight SQL server. Smoke test: every generated event is
read by its job (its metrics say so), scored into the lake on S3, and answered over Flight SQL;
the stack stops cleanly."""

import json
import os
import re
import subprocess
import time

import adbc_driver_flightsql.dbapi as flight_sql

from conftest import ROOT, S3_CREDENTIALS, consume_all, read_json
from test_metrics import get, parse, values

SOURCES = {"TRANSACTIONS": "financial-transactions", "CLAIMS": "insurance-claims", "TELEMETRY": "iot-telemetry"}
EVENT_TYPES = {"TRANSACTIONS": "transaction", "CLAIMS": "claim", "TELEMETRY": "telemetry"}


def read_env(path) -> dict:
    env = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def test_the_local_stack_scores_every_event_and_serves_it(riskstream_bin, kafka_bootstrap, s3_endpoint, tmp_path):
    state = tmp_path / "stack"
    env = dict(os.environ, RISKSTREAM_STACK_DIR=str(state), RISKSTREAM_BIN=str(riskstream_bin),
               RISKSTREAM_TEST_KAFKA=kafka_bootstrap, RISKSTREAM_TEST_S3_ENDPOINT=s3_endpoint,
               STACK_ANALYST_PASSWORD="smoke-test-password", **S3_CREDENTIALS)
    script = str(ROOT / "scripts" / "local-stack.sh")
    started = subprocess.run([script, "start", "6000"], env=env, capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stderr
        stack = read_env(state / "env")
        summary = read_json(stack["STACK_GENERATE_SUMMARY"])
        delivered = {d["topic"]: d["acknowledged"] for d in summary["delivery"]}
        malformed = {name: s["malformed"] for name, s in summary["sources"].items()}

        # Each job reads its topic to the end.
        written = {}
        deadline = time.monotonic() + 300
        for job, topic in SOURCES.items():
            base = stack[f"STACK_METRICS_{job}"]
            expected = delivered[stack["STACK_TOPIC_PREFIX"] + topic]
            samples = {}
            while time.monotonic() < deadline:
                if get(f"{base}/readyz")[0] == 200:
                    samples, _ = parse(get(f"{base}/metrics")[2])
                    if values(samples, "riskstream_input_rows_total").get(frozenset()) == expected:
                        break
                time.sleep(0.5)
            assert values(samples, "riskstream_input_rows_total").get(frozenset()) == expected, job
            written[job] = values(samples, "riskstream_output_rows_total")[frozenset()]
            assert written[job] == expected - malformed[topic], job

        # The Flight SQL server answers from the same lake on S3.
        with flight_sql.connect(stack["STACK_FLIGHT"], db_kwargs={"username": "analyst",
                                                                  "password": "smoke-test-password"},
                                autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT event_type, count(*) AS n FROM risk_scores GROUP BY event_type")
                counts = {row[0]: row[1] for row in cur.fetchall()}
        assert counts == {EVENT_TYPES[job]: n for job, n in written.items()}
        # The server counted that statement.
        served, _ = parse(get(f"{stack['STACK_FLIGHT_METRICS']}/metrics")[2])
        assert values(served, "riskstream_flight_queries_total")[frozenset({("outcome", "ok")})] >= 1
        assert values(served, "riskstream_flight_rows_total")[frozenset()] >= len(counts)
        assert values(served, "riskstream_flight_query_duration_seconds_count")[frozenset()] >= 1
        # Every Flight metric the shipped dashboard plots is one the server serves.
        dashboard = json.loads((ROOT / "config/grafana/dashboards/riskstream.json").read_text())
        plotted = {name for panel in dashboard["panels"] for target in panel["targets"]
                   for name in re.findall(r"riskstream_flight_[a-z_]+", target["expr"])}
        assert plotted and plotted <= {name for name, _ in served}, plotted

        # And the alerts reached their topic.
        alerts_topic = stack["STACK_TOPIC_PREFIX"] + "risk-alerts"
        alerts, _ = consume_all(kafka_bootstrap, alerts_topic, 1, timeout_s=60)
        assert alerts
    finally:
        stopped = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    for job in ("transactions", "claims", "telemetry"):
        log = (state / f"{job}.log").read_text()
        assert "query " in log and "batches" in log, f"{job} did not stop cleanly:\n{log[-2000:]}"
