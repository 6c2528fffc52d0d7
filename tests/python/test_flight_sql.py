"""`riskstream serve` as BI tools meet it: Python ADBC's Flight SQL driver (the Go driver under
ADBC, an independent client) logs in, lists, queries, prepares with parameters, reads large
results, over TLS too, and is refused writes and bad credentials. Results equal `riskstream sql`'s."""

import json
import os
import re
import subprocess

import pytest

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager

from conftest import read_json, run_riskstream, s3_env

USER = "analyst"
PASSWORD = "correct horse battery"
TOKEN = "dashboard-token-0123456789"


class Server:
    def __init__(self, proc, uri):
        self.proc = proc
        self.uri = uri

    def stop(self):
        """SIGTERM: a graceful stop, exit status 0."""
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert code == 0, self.proc.stderr.read()


def start_server(binary, lake, tmp_path, extra_config="", env=None, scheme="grpc"):
    config = tmp_path / "serve.toml"
    config.write_text(f"""
[auth]
users = [{{ name = "{USER}", password_env = "TEST_ANALYST_PASSWORD" }}]
tokens = ["{TOKEN}"]
{extra_config}
""")
    full_env = dict(os.environ, TEST_ANALYST_PASSWORD=PASSWORD)
    full_env.update(env or {})
    proc = subprocess.Popen([str(binary), "serve", "--config", str(config), "--lake", str(lake),
                             "--bind", "127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True, env=full_env)
    line = proc.stderr.readline()
    match = re.search(r"on (grpc(?:\+tls)?)://([\d.]+):(\d+)", line)
    if not match:
        proc.kill()
        raise AssertionError(f"server did not start: {line}{proc.stderr.read()}")
    host = "localhost" if scheme == "grpc+tls" else match.group(2)
    return Server(proc, f"{match.group(1)}://{host}:{match.group(3)}")


def connect(server, **kwargs):
    db_kwargs = {"username": USER, "password": PASSWORD}
    db_kwargs.update(kwargs)
    return flight_sql.connect(server.uri, db_kwargs=db_kwargs, autocommit=True)


def local_rows(binary, lake, sql, env=None):
    out = run_riskstream(binary, "sql", "--lake", str(lake), "--format", "json", sql, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_lake(riskstream_bin, tmp_path_factory):
    lake = tmp_path_factory.mktemp("flight") / "lake"
    summary = tmp_path_factory.mktemp("flight-summary") / "demo.json"
    run_riskstream(riskstream_bin, "demo", "--events", "20000", "--batch-events", "5000", "--seed", "3",
                   "--lake", str(lake), "--summary", str(summary))
    return lake, read_json(summary)


@pytest.fixture
def server(riskstream_bin, demo_lake, tmp_path):
    srv = start_server(riskstream_bin, demo_lake[0], tmp_path)
    yield srv
    srv.stop()


def test_queries_equal_riskstream_sql(riskstream_bin, demo_lake, server):
    lake, summary = demo_lake
    sql = ("SELECT event_type, severity, count(*) AS n, round(avg(risk_score), 6) AS avg_score "
           "FROM risk_scores GROUP BY 1, 2 ORDER BY 1, 2")
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(sql)
        remote = cur.fetch_arrow_table().to_pylist()
        cur.execute("SELECT count(*) AS n FROM risk_scores")
        assert cur.fetchone()[0] == summary["valid_events"]
        # Logical and physical plans disagree on date_trunc's nullability; the stream must carry
        # the schema FlightInfo announced or ADBC refuses it.
        cur.execute("SELECT event_type, date_trunc('hour', event_time) AS hour, count(*) AS n "
                    "FROM risk_scores GROUP BY 1, 2 ORDER BY 1, 2")
        assert sum(r[2] for r in cur.fetchall()) == summary["valid_events"]
        cur.execute("SELECT count(*) AS n FROM risk_scores VERSION AS OF 1")
        first_batch = cur.fetchone()[0]
    assert remote == local_rows(riskstream_bin, lake, sql)
    assert 0 < first_batch < summary["valid_events"]
    assert local_rows(riskstream_bin, lake, "SELECT count(*) AS n FROM risk_scores VERSION AS OF 1") == \
        [{"n": first_batch}]


def test_metadata_lists_the_lake(server):
    with connect(server) as conn:
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "Riskstream"
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        catalogs = {c["catalog_name"]: c for c in objects}
        assert set(catalogs) == {"riskstream"}
        schemas = {s["db_schema_name"]: s for s in catalogs["riskstream"]["catalog_db_schemas"]}
        tables = {t["table_name"]: t for t in schemas["lake"]["db_schema_tables"]}
        assert {"risk_scores", "dead_letters", "fraud_labels"} <= set(tables)
        columns = [c["column_name"] for c in tables["risk_scores"]["table_columns"]]
        assert columns[:3] == ["event_id", "event_type", "entity_id"]
        schema = conn.adbc_get_table_schema("risk_scores")
        assert schema.field("risk_score").type == "double"
        assert str(schema.field("event_id").type) == "string"
        assert conn.adbc_get_table_types() == ["TABLE"]


def test_prepared_statements_take_parameters(riskstream_bin, demo_lake, server):
    lake, _ = demo_lake
    with connect(server) as conn, conn.cursor() as cur:
        for threshold, kind in [(0.2, "transaction"), (0.5, "claim"), (0.0, "telemetry")]:
            cur.execute("SELECT count(*) AS n FROM risk_scores WHERE risk_score > ? AND event_type = ?",
                        parameters=(threshold, kind))
            remote = cur.fetchone()[0]
            here = local_rows(riskstream_bin, lake, "SELECT count(*) AS n FROM risk_scores "
                              f"WHERE risk_score > {threshold} AND event_type = '{kind}'")
            assert remote == here[0]["n"], (threshold, kind)


def test_large_results_stream(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT value, value % 7 AS bucket FROM generate_series(1, 3000000)")
        reader = cur.fetch_record_batch()
        rows = 0
        batches = 0
        total = 0
        for batch in reader:
            rows += batch.num_rows
            batches += 1
            total += sum(batch.column(0).to_pylist())
    assert rows == 3_000_000
    assert batches > 10
    assert total == 3_000_000 * 3_000_001 // 2


def test_writes_are_refused(server):
    with connect(server) as conn, conn.cursor() as cur:
        for sql in ["CREATE TABLE copy AS SELECT * FROM risk_scores",
                    "INSERT INTO risk_scores SELECT * FROM risk_scores",
                    "DELETE FROM risk_scores"]:
            with pytest.raises(adbc_driver_manager.Error, match="read-only"):
                cur.execute(sql)
                cur.fetchall()


def test_credentials_and_tokens(server):
    with pytest.raises(adbc_driver_manager.Error, match="wrong user name or password"):
        flight_sql.connect(server.uri, db_kwargs={"username": USER, "password": "guess"}, autocommit=True).cursor().execute("SELECT 1")
    with pytest.raises(adbc_driver_manager.Error, match="authorization"):
        with flight_sql.connect(server.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    with flight_sql.connect(server.uri, db_kwargs={
            "adbc.flight.sql.authorization_header": f"Bearer {TOKEN}"}, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 41 + 1 AS answer")
        assert cur.fetchone()[0] == 42


def test_tls(riskstream_bin, demo_lake, tmp_path):
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    srv = start_server(riskstream_bin, demo_lake[0], tmp_path,
                       extra_config=f'[tls]\ncert = "{cert}"\nkey = "{key}"\n', scheme="grpc+tls")
    try:
        assert srv.uri.startswith("grpc+tls://")
        with connect(srv, **{"adbc.flight.sql.client_option.tls_root_certs": cert.read_text()}) as conn, \
                conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM risk_scores")
            assert cur.fetchone()[0] == demo_lake[1]["valid_events"]
        # A client that does not trust the certificate does not get in.
        with pytest.raises(adbc_driver_manager.Error):
            with connect(srv) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
    finally:
        srv.stop()


def test_serves_a_lake_on_s3(riskstream_bin, s3_endpoint, s3_bucket, tmp_path):
    env = s3_env(s3_endpoint)
    uri = f"s3://{s3_bucket}/lake"
    run_riskstream(riskstream_bin, "demo", "--events", "6000", "--batch-events", "3000", "--seed", "8",
                   "--lake", uri, "--summary", str(tmp_path / "s3.json"), env=env)
    summary = read_json(tmp_path / "s3.json")
    srv = start_server(riskstream_bin, uri, tmp_path, env=env)
    try:
        with connect(srv) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM risk_scores")
            assert cur.fetchone()[0] == summary["valid_events"]
            cur.execute("SELECT count(*) FROM dead_letters")
            assert cur.fetchone()[0] == summary["malformed"]
    finally:
        srv.stop()


def test_new_commits_are_seen_without_a_restart(riskstream_bin, tmp_path):
    lake = tmp_path / "lake"
    args = ["demo", "--events", "4000", "--batch-events", "2000", "--lake", str(lake)]
    run_riskstream(riskstream_bin, *args, "--seed", "1")
    srv = start_server(riskstream_bin, lake, tmp_path)
    try:
        with connect(srv) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM risk_scores")
            before = cur.fetchone()[0]
            cur.execute("DESCRIBE HISTORY risk_scores LIMIT 1")
            version = cur.fetchone()[[d[0] for d in cur.description].index("version")]
            # Another seed: new events, appended as new commits while the server runs.
            run_riskstream(riskstream_bin, *args, "--seed", "2")
            cur.execute("SELECT count(*) FROM risk_scores")
            after = cur.fetchone()[0]
            assert after > before
            cur.execute(f"SELECT count(*) FROM risk_scores VERSION AS OF {version}")
            assert cur.fetchone()[0] == before
    finally:
        srv.stop()
