"""`riskstream run --metrics-addr`: Prometheus metrics, /healthz and /readyz of a running job,
read over HTTP as Prometheus would, and checked against the lake and the topic."""

import json
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

from conftest import ROOT
from streamjobs import TRANSACTIONS_TOPIC, StreamJob
from test_stream_job import acknowledged, transactions_only

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict:
    """Prometheus text format: {(name, frozenset(labels)): value}, and every family typed once."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"{name} typed twice"
            types[name] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            labels = frozenset(LABEL.findall(m.group(2) or ""))
            samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


def values(samples: dict, name: str) -> dict:
    """The samples of `name`, by their labels other than the job's."""
    return {frozenset(l for l in labels if l[0] != "job"): v for (n, labels), v in samples.items() if n == name}


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, "", e.read().decode()


def test_a_running_job_reports_its_metrics(riskstream_bin, kafka_bootstrap, tmp_path):
    job = StreamJob(riskstream_bin, kafka_bootstrap, str(tmp_path / "lake"), str(tmp_path / "checkpoints"),
                    extra_env={"RISKSTREAM_MAX_OFFSETS_PER_TRIGGER": "2000"})
    summary, _ = transactions_only(job, tmp_path, 6000)
    records = acknowledged(summary, job)
    malformed = summary["sources"][TRANSACTIONS_TOPIC]["malformed"]

    proc = job.start("--metrics-addr", "127.0.0.1:0")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        base = None
        while base is None and time.monotonic() < deadline:
            for line in list(lines):
                if m := re.search(r"metrics on (http://\S+)/metrics", line):
                    base = m.group(1)
            time.sleep(0.1)
        assert base, f"no metrics address in the job's output: {lines}"
        assert get(f"{base}/healthz")[0] == 200

        # Ready once the query has started; then every record is read within the deadline.
        while time.monotonic() < deadline and get(f"{base}/readyz")[0] != 200:
            time.sleep(0.2)
        assert get(f"{base}/readyz")[0] == 200
        samples = {}
        while time.monotonic() < deadline + 120:
            status, content_type, text = get(f"{base}/metrics")
            assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
            samples, types = parse(text)
            if values(samples, "riskstream_input_rows_total").get(frozenset()) == records:
                break
            time.sleep(0.5)
        one = lambda name: values(samples, name)[frozenset()]
        assert one("riskstream_input_rows_total") == records
        assert types["riskstream_input_rows_total"] == "counter"
        assert types["riskstream_batch_duration_seconds"] == "histogram"
        assert one("riskstream_up") == 1
        batches = one("riskstream_batches_total")
        assert batches >= 3, "2,000 records per batch at most"
        assert one("riskstream_dead_letters_total") == malformed
        scored = one("riskstream_output_rows_total")
        assert scored == records - malformed
        # Every partition read to its end.
        lag = values(samples, "riskstream_partition_lag_records")
        assert lag and all(v == 0 for v in lag.values())
        assert {dict(k)["topic"] for k in lag} == {job.prefix + TRANSACTIONS_TOPIC}
        # The histograms: cumulative buckets ending with every observation.
        durations = values(samples, "riskstream_batch_duration_seconds_bucket")
        assert durations[frozenset({("le", "+Inf")})] == one("riskstream_batch_duration_seconds_count") == batches
        scores = values(samples, "riskstream_risk_score_bucket")
        ordered = sorted(scores.items(), key=lambda kv: float(dict(kv[0])["le"].replace("+Inf", "inf")))
        assert [v for _, v in ordered] == sorted(v for _, v in ordered)
        assert ordered[-1][1] == one("riskstream_risk_score_count") == scored
        assert 0 < one("riskstream_risk_score_sum") < scored
        # Severity tiers add up to the scores, and the alerts are the high and critical ones.
        tiers = {dict(k)["severity"]: v for k, v in values(samples, "riskstream_scores_total").items()}
        assert sum(tiers.values()) == scored and set(tiers) <= {"low", "medium", "high", "critical"}
        alerts = {dict(k)["severity"]: v for k, v in values(samples, "riskstream_alerts_total").items()}
        assert alerts == {t: n for t, n in tiers.items() if t in ("high", "critical")}
        assert one("riskstream_alerts_published_total") == sum(alerts.values())
        versions = {dict(k)["table"] for k in values(samples, "riskstream_table_version")}
        assert "table" in versions
        assert one("riskstream_state_rows") > 0
        # Every metric the shipped Grafana dashboard plots is one the job serves.
        dashboard = json.loads((ROOT / "config/grafana/dashboards/riskstream.json").read_text())
        plotted = {name for panel in dashboard["panels"] for target in panel["targets"]
                   for name in re.findall(r"riskstream_[a-z_]+", target["expr"])
                   if not name.startswith("riskstream_flight_")}  # the server's: test_local_stack
        served = {name for name, _ in samples}
        assert plotted and plotted <= served, plotted - served
        # The events are from 2026-11-01 on, an hour's delay behind the latest.
        assert 3600 <= one("riskstream_watermark_delay_seconds") < 10 * 365 * 86400
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0, "".join(lines)


def test_logs_are_one_json_object_per_line_when_asked(riskstream_bin, kafka_bootstrap, tmp_path):
    job = StreamJob(riskstream_bin, kafka_bootstrap, str(tmp_path / "lake"), str(tmp_path / "checkpoints"),
                    extra_env={"RISKSTREAM_MAX_OFFSETS_PER_TRIGGER": "1000"})
    summary, _ = transactions_only(job, tmp_path, 2500)
    proc = job.run("--available-now", "--log-format", "json")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is a JSON object
    assert all({"timestamp", "level", "target", "fields"} <= set(r) for r in records)
    progress = [json.loads(r["fields"]["message"]) for r in records if r["target"] == "riskstream::progress"]
    assert len(progress) >= 3 and sum(p["numInputRows"] for p in progress) == acknowledged(summary, job)
    assert all(r["level"] == "INFO" for r in records if r["target"] == "riskstream::progress")
