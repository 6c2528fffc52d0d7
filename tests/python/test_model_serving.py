"""A running job scores with the registry's champion, picks up a newly promoted version without a
restart, and scores the challenger in shadow beside it: against the real broker."""

import re
import signal
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import run_riskstream
from streamjobs import SPECS, StreamJob

SQL = """
SELECT
    event_id,
    'transaction' AS event_type,
    user_id AS entity_id,
    event_time,
    m['score'] AS risk_score,
    m['model_version'] AS model_version,
    c['score'] AS shadow_score,
    c['model_version'] AS shadow_version
FROM (
    SELECT *,
        transaction_model(amount, account_age_days) AS m,
        transaction_model_challenger(amount, account_age_days) AS c
    FROM transactions
)
"""


def spec_with_model(tmp_path, lake):
    """The shipped transactions spec, scoring with a registry model instead of the rules."""
    (tmp_path / "score.sql").write_text(SQL)
    text = (SPECS / "transactions.toml").read_text()
    text = text.replace('file = "sql/scoring/transactions.sql"', f'file = "{tmp_path / "score.sql"}"')
    # The per-event SQL above needs neither the rolling features nor the shipped model binding.
    text = re.sub(r"\n(views|watermark|emit|tables) = [^\n]*", "", text)
    text = re.sub(r"\n\[\[models\]\]\n(?:[^\n]+\n)*", "\n", text)
    # Nor the blocklist, which copies columns this SQL does not write.
    text = re.sub(r"\n\[block\]\n(?:[^\n]+\n)*", "\n", text)
    text = text.replace('processingTime = "1 second"', 'processingTime = "300ms"')
    text = text.split("\n[alerts]")[0].rsplit("\n#", 1)[0]
    text += f"""
[[models]]
function = "transaction_model"
lake = "{lake}"
name = "tx"
refresh = "500ms"
shadow = true
"""
    path = tmp_path / "score-with-model.toml"
    path.write_text(text)
    return path


def train_version(binary, tmp_path, lake, version, seed):
    rng = np.random.default_rng(seed)
    n = 4000
    amount = rng.lognormal(4, 1.3, n)
    age = rng.integers(0, 3000, n)
    label = ((amount > 300) | (age < 30)) ^ (rng.random(n) < 0.05)
    path = tmp_path / f"train-{version}.parquet"
    pq.write_table(pa.table({"amount": amount, "account_age_days": age, "label": label.astype(np.int64)}), path)
    out = tmp_path / f"model-{version}"
    run_riskstream(binary, "train", "--input", str(path), "--out", str(out), "--name", "tx", "--version", version,
                   "--rounds", str(5 + 10 * seed), "--forest-trees", "20", "--seed", str(seed))
    run_riskstream(binary, "model", "publish", "--lake", lake, "--model", str(out))


def wait_for_rows(job, proc, predicate, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the job stopped ({proc.returncode}): {proc.stderr.read()}")
        try:
            table = job.table("risk_scores")
            if predicate(table):
                return table
        except Exception:  # the table does not exist before the first commit
            pass
        time.sleep(0.3)
    raise AssertionError("the job did not write the expected rows in time")


def test_hot_reload_and_shadow_scoring_in_a_running_job(riskstream_bin, kafka_bootstrap, tmp_path):
    lake = str(tmp_path / "lake")
    train_version(riskstream_bin, tmp_path, lake, "1", 1)
    train_version(riskstream_bin, tmp_path, lake, "2", 2)
    run_riskstream(riskstream_bin, "model", "promote", "--lake", lake, "tx", "1")

    job = StreamJob(riskstream_bin, kafka_bootstrap, lake, str(tmp_path / "checkpoints"))
    job.spec = spec_with_model(tmp_path, lake)
    job.generate("--source", "transactions", "--count", "1500", "--seed", "5", "--malformed", "0")
    proc = job.start()
    try:
        first = wait_for_rows(job, proc, lambda t: t.num_rows >= 1500)
        assert first.num_rows == 1500
        assert set(first.column("model_version").to_pylist()) == {"tx/1"}
        # No challenger yet: the shadow column repeats the champion.
        assert set(first.column("shadow_version").to_pylist()) == {"tx/1"}

        # Promote while the job runs: version 2 becomes the champion, version 1 the challenger.
        run_riskstream(riskstream_bin, "model", "promote", "--lake", lake, "tx", "2")
        run_riskstream(riskstream_bin, "model", "promote", "--lake", lake, "tx", "1", "--challenger")
        time.sleep(2.0)  # four refresh intervals
        job.generate("--source", "transactions", "--count", "1500", "--seed", "6", "--malformed", "0")
        both = wait_for_rows(job, proc, lambda t: t.num_rows >= 3000)
        assert proc.poll() is None, "the job kept running"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert both.num_rows == 3000
    rows = both.to_pylist()
    later = [r for r in rows if r["model_version"] == "tx/2"]
    assert len(later) == 1500, "every event produced after the promotion scored with version 2"
    assert all(r["shadow_version"] == "tx/1" for r in later)
    assert any(abs(r["risk_score"] - r["shadow_score"]) > 1e-9 for r in later), "two models, two scores"
    assert "new model version served" in err
