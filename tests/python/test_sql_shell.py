"""`riskstream sql` as analysts use it: statements from files and pipes, and the interactive
shell on a terminal (a pseudo-terminal here): history, multi-line statements, backslash commands."""

import os
import select
import subprocess
import time

from conftest import run_riskstream


def make_lake(binary, tmp_path):
    lake = tmp_path / "lake"
    run_riskstream(binary, "demo", "--events", "3000", "--batch-events", "1500", "--seed", "9",
                   "--lake", str(lake))
    return lake


def test_files_and_pipes_run_every_statement(riskstream_bin, tmp_path):
    lake = make_lake(riskstream_bin, tmp_path)
    script = tmp_path / "report.sql"
    script.write_text("-- two statements; the second spans lines\n"
                      "SELECT 'a;b' AS s;\n"
                      "SELECT count(*) AS n\n  FROM risk_scores\n  WHERE event_type = 'claim';\n")
    out = run_riskstream(riskstream_bin, "sql", "--lake", str(lake), "--format", "csv", "-f", str(script))
    lines = out.stdout.splitlines()
    assert lines[:2] == ["s", "a;b"]
    assert lines[2] == "n" and int(lines[3]) > 0
    piped = subprocess.run([str(riskstream_bin), "sql", "--lake", str(lake), "--format", "csv"],
                           input="SELECT 1 AS one; SELECT 2 AS two", capture_output=True, text=True,
                           timeout=300)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines() == ["one", "1", "two", "2"]
    bad = run_riskstream(riskstream_bin, "sql", "--lake", str(lake), "SELECT nope FROM risk_scores", check=False)
    assert bad.returncode != 0 and "nope" in bad.stderr


class Terminal:
    """The shell on a pseudo-terminal, read until expected text shows."""

    def __init__(self, binary, lake, home):
        self.master, slave = os.openpty()
        env = dict(os.environ, HOME=str(home), TERM="dumb")
        self.proc = subprocess.Popen([str(binary), "sql", "--lake", str(lake)], stdin=slave, stdout=slave,
                                     stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text, timeout=120):
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never showed; got:\n{self.seen}"
            ready, _, _ = select.select([self.master], [], [], min(left, 1.0))
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode(errors="replace")
                except OSError:
                    break
        assert text in self.seen, f"{text!r} never showed; got:\n{self.seen}"
        found = self.seen
        self.seen = ""
        return found

    def send(self, line):
        os.write(self.master, (line + "\r").encode())

    def close(self):
        self.proc.wait(timeout=60)
        os.close(self.master)


def test_interactive_shell(riskstream_bin, tmp_path):
    lake = make_lake(riskstream_bin, tmp_path)
    term = Terminal(riskstream_bin, lake, tmp_path)
    try:
        term.expect("riskstream> ")
        term.send("\\dt")
        assert "risk_scores" in term.expect("riskstream> ")
        term.send("\\d risk_scores")
        out = term.expect("riskstream> ")
        assert "risk_score" in out and "Float64" in out
        term.send("\\timing")
        term.expect("Timing is on")
        term.send("SELECT 40 + 2")
        term.expect("-> ")
        term.send("  AS answer;")
        out = term.expect("riskstream> ")
        assert "42" in out and "Time:" in out
        term.send("CREATE TABLE x AS SELECT 1;")
        assert "read-only" in term.expect("riskstream> ")
        term.send("\\q")
        term.close()
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert term.proc.returncode == 0
    history = (tmp_path / ".riskstream_history").read_text()
    assert "SELECT 40 + 2\n  AS answer;" in history or "AS answer;" in history
