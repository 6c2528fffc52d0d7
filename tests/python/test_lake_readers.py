"""Our Delta tables as outside readers see them (Python deltalake, polars, DuckDB), and time travel
in `riskstream sql` against deltalake's own reading of older versions."""

import json

import duckdb
import polars as pl
from deltalake import DeltaTable

from conftest import run_riskstream


def sql_rows(binary, lake, sql):
    out = run_riskstream(binary, "sql", "--lake", str(lake), "--format", "json", sql).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_polars_and_deltalake_read_what_riskstream_sql_reads(riskstream_bin, tmp_path):
    lake = tmp_path / "lake"
    run_riskstream(riskstream_bin, "demo", "--events", "12000", "--batch-events", "4000", "--seed", "4",
                   "--lake", str(lake))
    ours = sql_rows(riskstream_bin, lake, "SELECT event_type, count(*) AS n, sum(risk_score) AS total "
                    "FROM risk_scores GROUP BY event_type ORDER BY event_type")
    frame = pl.read_delta(str(lake / "risk_scores"))
    theirs = (frame.group_by("event_type").agg(pl.len().alias("n"), pl.col("risk_score").sum().alias("total"))
              .sort("event_type").to_dicts())
    assert [r["event_type"] for r in ours] == [r["event_type"] for r in theirs]
    for a, b in zip(ours, theirs):
        assert a["n"] == b["n"]
        assert abs(a["total"] - b["total"]) < 1e-6 * max(1.0, abs(b["total"]))
    ids = frame.get_column("event_id")
    assert ids.n_unique() == len(ids)

    # DuckDB reads the live files the log lists with its own Parquet reader (its Delta extension
    # is downloaded at run time, and the machine is offline).
    files = DeltaTable(str(lake / "risk_scores")).file_uris()
    duck = duckdb.sql(
        "SELECT event_type, count(*) AS n, sum(risk_score) AS total "
        f"FROM read_parquet({files!r}, hive_partitioning = true) GROUP BY event_type ORDER BY event_type"
    ).fetchall()
    assert [(r[0], r[1]) for r in duck] == [(r["event_type"], r["n"]) for r in ours]
    for (_, _, total), mine in zip(duck, ours):
        assert abs(total - mine["total"]) < 1e-6 * max(1.0, abs(total))


def test_time_travel_matches_deltalakes_versions(riskstream_bin, tmp_path):
    lake = tmp_path / "lake"
    run_riskstream(riskstream_bin, "demo", "--events", "9000", "--batch-events", "3000", "--seed", "6",
                   "--lake", str(lake))
    table = DeltaTable(str(lake / "risk_scores"))
    history = sql_rows(riskstream_bin, lake, "DESCRIBE HISTORY risk_scores")
    assert [h["version"] for h in history] == list(range(table.version(), -1, -1))
    assert [h["operation"] for h in history] == [c["operation"] for c in table.history()]
    for version in range(table.version() + 1):
        expected = DeltaTable(str(lake / "risk_scores"), version=version).to_pyarrow_table().num_rows
        got = sql_rows(riskstream_bin, lake, f"SELECT count(*) AS n FROM risk_scores VERSION AS OF {version}")
        assert got == [{"n": expected}], version
        # The commit's own timestamp reads that version back.
        stamp = next(h["timestamp"] for h in history if h["version"] == version)
        got = sql_rows(riskstream_bin, lake,
                       f"SELECT count(*) AS n FROM risk_scores TIMESTAMP AS OF '{stamp}'")
        assert got == [{"n": expected}], (version, stamp)
    missing = run_riskstream(riskstream_bin, "sql", "--lake", str(lake),
                             "SELECT * FROM risk_scores VERSION AS OF 999", check=False)
    assert missing.returncode != 0
    assert "risk_scores" in missing.stderr


def test_sql_writes_parquet_csv_and_json_files(riskstream_bin, tmp_path):
    lake = tmp_path / "lake"
    run_riskstream(riskstream_bin, "demo", "--events", "3000", "--batch-events", "3000", "--lake", str(lake))
    sql = "SELECT event_id, risk_score FROM risk_scores ORDER BY event_id"
    run_riskstream(riskstream_bin, "sql", "--lake", str(lake), "--out", str(tmp_path / "s.parquet"), sql)
    run_riskstream(riskstream_bin, "sql", "--lake", str(lake), "--out", str(tmp_path / "s.csv"), sql)
    run_riskstream(riskstream_bin, "sql", "--lake", str(lake), "--out", str(tmp_path / "s.json"), sql)
    parquet = pl.read_parquet(tmp_path / "s.parquet")
    csv = pl.read_csv(tmp_path / "s.csv")
    lines = [json.loads(l) for l in (tmp_path / "s.json").read_text().splitlines()]
    assert parquet.get_column("event_id").to_list() == csv.get_column("event_id").to_list() == \
        [r["event_id"] for r in lines]
    assert len(lines) == DeltaTable(str(lake / "risk_scores")).to_pyarrow_table().num_rows
