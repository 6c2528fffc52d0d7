"""Flight SQL numbers: DoGet throughput on loopback for a large result, and the latency of typical
analyst queries on risk_scores through Flight SQL (ADBC) against DuckDB over the same Parquet files.

    python bench/flight_sql.py --bin target/release/riskstream --lake /tmp/bench-lake --events 10000000

Builds the lake with `riskstream demo` when it has no risk_scores table yet. DuckDB reads the
table's Parquet files directly (the demo only appends, so every file is live); it is not a Delta
reader here, because its delta extension is downloaded at run time and this machine is offline.
"""

import argparse
import re
import statistics
import subprocess
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
import pyarrow.flight as pa_flight

QUERIES = {
    "count by severity": "SELECT severity, count(*) AS n FROM risk_scores GROUP BY severity ORDER BY severity",
    "hourly average by type": (
        "SELECT event_type, date_trunc('hour', event_time) AS hour, avg(risk_score) AS avg_score, "
        "count(*) AS n FROM risk_scores GROUP BY 1, 2 ORDER BY 1, 2"),
    "top entities by high scores": (
        "SELECT entity_id, count(*) AS alerts, max(risk_score) AS worst FROM risk_scores "
        "WHERE severity IN ('high', 'critical') GROUP BY entity_id ORDER BY alerts DESC, entity_id LIMIT 20"),
    "one entity's history": (
        "SELECT event_id, event_time, risk_score, severity FROM risk_scores "
        "WHERE entity_id = (SELECT min(entity_id) FROM risk_scores) ORDER BY event_time"),
}


def any_command(query: str) -> bytes:
    """A Flight SQL CommandStatementQuery packed in a protobuf Any, encoded by hand (two
    length-delimited fields each), so the raw pyarrow client needs no protobuf package."""

    def field(number: int, payload: bytes) -> bytes:
        length = len(payload)
        varint = bytearray()
        while True:
            byte = length & 0x7F
            length >>= 7
            varint.append(byte | (0x80 if length else 0))
            if not length:
                break
        return bytes([number << 3 | 2]) + bytes(varint) + payload

    inner = field(1, query.encode())
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return field(1, type_url) + field(2, inner)


def start_server(binary: str, lake: Path):
    proc = subprocess.Popen([binary, "serve", "--lake", str(lake), "--bind", "127.0.0.1:0"],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    match = re.search(r"grpc://([\d.]+:\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"server did not start: {line}")
    return proc, match.group(1)


def timed(fn, repeat: int):
    times = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--lake", required=True, type=Path)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    if not (args.lake / "risk_scores" / "_delta_log").exists():
        subprocess.run([args.bin, "demo", "--events", str(args.events), "--lake", str(args.lake)],
                       check=True, stdout=subprocess.DEVNULL)
    proc, addr = start_server(args.bin, args.lake)
    try:
        # DoGet throughput: the raw Arrow C++ Flight client, then ADBC (what applications use).
        client = pa_flight.FlightClient(f"grpc://{addr}")
        big = f"SELECT * FROM risk_scores LIMIT {args.rows}"
        info = client.get_flight_info(pa_flight.FlightDescriptor.for_command(any_command(big)))

        def fetch_raw():
            reader = client.do_get(info.endpoints[0].ticket)
            rows = size = 0
            for chunk in reader:
                rows += chunk.data.num_rows
                size += chunk.data.nbytes
            return rows, size

        fetch_raw()  # warm: the table's log and file footers are read once
        seconds, (rows, size) = timed(fetch_raw, args.repeat)
        print(f"DoGet, pyarrow.flight: {rows:,} rows, {size / 1e9:.2f} GB in {seconds:.2f} s = "
              f"{size / seconds / 1e9:.2f} GB/s, {rows / seconds / 1e6:.1f} M rows/s")
        conn = flight_sql.connect(f"grpc://{addr}", autocommit=True)
        cur = conn.cursor()

        def fetch_adbc():
            cur.execute(big)
            table = cur.fetch_arrow_table()
            return table.num_rows, table.nbytes

        seconds, (rows, size) = timed(fetch_adbc, args.repeat)
        print(f"DoGet, ADBC:           {rows:,} rows, {size / 1e9:.2f} GB in {seconds:.2f} s = "
              f"{size / seconds / 1e9:.2f} GB/s, {rows / seconds / 1e6:.1f} M rows/s")

        duck = duckdb.connect()
        files = str(args.lake / "risk_scores" / "*" / "*.parquet")
        duck.execute(f"CREATE VIEW risk_scores AS SELECT * FROM read_parquet('{files}', hive_partitioning = true)")
        print(f"{'query':<30} {'riskstream (Flight SQL)':>24} {'DuckDB':>10} {'ratio':>7}")
        for name, sql in QUERIES.items():
            def ours():
                cur.execute(sql)
                return cur.fetch_arrow_table().num_rows

            def theirs():
                return duck.sql(sql).to_arrow_table().num_rows

            ours()
            theirs()
            ours_s, ours_rows = timed(ours, args.repeat)
            theirs_s, theirs_rows = timed(theirs, args.repeat)
            assert ours_rows == theirs_rows, (name, ours_rows, theirs_rows)
            print(f"{name:<30} {ours_s * 1000:>21.1f} ms {theirs_s * 1000:>7.1f} ms {ours_s / theirs_s:>6.2f}x")
        cur.close()
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
