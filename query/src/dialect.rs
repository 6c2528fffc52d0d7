//! Spark and Delta SQL that DataFusion's parser does not take, rewritten into SQL it does, before
//! planning.
//!
//! - Time travel (`FROM t VERSION AS OF 12`, `FROM t TIMESTAMP AS OF '2026-11-29 10:00:00'`): the
//!   table becomes the lake schema's versioned name (`"t@v12" AS t`), which the schema resolves to
//!   the table at that commit. DataFusion's planner would otherwise ignore the clause (it parses
//!   only with the Databricks dialect, and the planner drops it), reading the latest version
//!   silently.
//! - `DESCRIBE HISTORY t [LIMIT n]`: recognised here and answered from the table's log.
//! - JDBC-style `?` parameters become DataFusion's positional `$1, $2, ...`.

use std::ops::ControlFlow;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, TableAlias, TableFactor, TableVersion as AstVersion,
    Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::{DatabricksDialect, GenericDialect};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use riskstream_lake::TableVersion;

use crate::error::{QueryError, Result};

/// `DESCRIBE HISTORY table [LIMIT n]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeHistory {
    /// The table.
    pub table: String,
    /// At most this many commits, newest first.
    pub limit: Option<usize>,
}

/// Recognises `DESCRIBE HISTORY t [LIMIT n]` (Delta's command); `None` for any other statement.
pub fn describe_history(sql: &str) -> Result<Option<DescribeHistory>> {
    let words: Vec<&str> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect();
    let [describe, history, rest @ ..] = words.as_slice() else {
        return Ok(None);
    };
    if !describe.eq_ignore_ascii_case("describe") || !history.eq_ignore_ascii_case("history") {
        return Ok(None);
    }
    let usage = || QueryError::Sql {
        message: format!(
            "`{}`: expected DESCRIBE HISTORY table [LIMIT n]",
            sql.trim()
        ),
    };
    let (table, limit) = match rest {
        [table] => (table, None),
        [table, limit_kw, n] if limit_kw.eq_ignore_ascii_case("limit") => {
            (table, Some(n.parse::<usize>().map_err(|_| usage())?))
        }
        _ => return Err(usage()),
    };
    let table = unquote(table).ok_or_else(usage)?;
    Ok(Some(DescribeHistory { table, limit }))
}

/// A table name as written: bare names are lower-cased as the SQL planner does, quoted ones kept.
fn unquote(name: &str) -> Option<String> {
    for (open, close) in [('"', '"'), ('`', '`')] {
        if let Some(inner) = name.strip_prefix(open) {
            return inner.strip_suffix(close).map(str::to_string);
        }
    }
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    plain.then(|| name.to_ascii_lowercase())
}

/// `sql` with every `t VERSION AS OF n` / `t TIMESTAMP AS OF ts` replaced by the lake schema's
/// versioned name for `t`; unchanged when it travels nowhere.
pub fn time_travel(sql: &str) -> Result<String> {
    let upper = sql.to_ascii_uppercase();
    if !upper.contains(" AS OF") {
        return Ok(sql.to_string());
    }
    // Parse errors are left to the planner, which names the position.
    let Ok(mut statements) = Parser::parse_sql(&DatabricksDialect {}, sql) else {
        return Ok(sql.to_string());
    };
    let mut rewrite = TimeTravel { changed: false };
    if let ControlFlow::Break(err) = statements.visit(&mut rewrite) {
        return Err(err);
    }
    if !rewrite.changed {
        return Ok(sql.to_string());
    }
    Ok(statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";\n"))
}

struct TimeTravel {
    changed: bool,
}

impl VisitorMut for TimeTravel {
    type Break = QueryError;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<QueryError> {
        let TableFactor::Table {
            name,
            alias,
            version,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let Some(clause) = version.take() else {
            return ControlFlow::Continue(());
        };
        let table_version = match travel_target(&clause) {
            Ok(v) => v,
            Err(e) => return ControlFlow::Break(e),
        };
        // The versioned name replaces the last part (`lake.t` -> `lake."t@v3"`); the alias keeps
        // `t.column` references working.
        let Some(ObjectNamePart::Identifier(last)) = name.0.last().cloned() else {
            return ControlFlow::Continue(());
        };
        let table = if last.quote_style.is_some() {
            last.value.clone()
        } else {
            last.value.to_ascii_lowercase()
        };
        let mut parts = name.0.clone();
        parts.pop();
        parts.push(ObjectNamePart::Identifier(Ident::with_quote(
            '"',
            table_version.table_name(&table),
        )));
        *name = ObjectName(parts);
        if alias.is_none() {
            *alias = Some(TableAlias {
                explicit: true,
                name: last,
                columns: Vec::new(),
                at: None,
            });
        }
        self.changed = true;
        ControlFlow::Continue(())
    }
}

fn travel_target(clause: &AstVersion) -> Result<TableVersion> {
    let bad = |what: &str| QueryError::Sql {
        message: format!("time travel: {what} (in `{clause}`)"),
    };
    match clause {
        AstVersion::VersionAsOf(Expr::Value(v)) => match &v.value {
            Value::Number(n, _) => n
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(TableVersion::Version)
                .ok_or_else(|| bad("VERSION AS OF takes a table version, a whole number >= 0")),
            _ => Err(bad("VERSION AS OF takes a table version, a whole number")),
        },
        AstVersion::TimestampAsOf(expr) => {
            let text = match expr {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.as_str()),
                    _ => None,
                },
                Expr::TypedString(typed) => match &typed.value.value {
                    Value::SingleQuotedString(s) => Some(s.as_str()),
                    _ => None,
                },
                _ => None,
            };
            let text = text.ok_or_else(|| {
                bad("TIMESTAMP AS OF takes a timestamp literal, such as '2026-11-29 10:00:00'")
            })?;
            let at = parse_timestamp(text)
                .ok_or_else(|| bad(&format!("`{text}` is not a timestamp (UTC)")))?;
            Ok(TableVersion::TimestampMillis(at.timestamp_millis()))
        }
        _ => Err(bad("only VERSION AS OF and TIMESTAMP AS OF are supported")),
    }
}

/// A timestamp as Spark takes it in `TIMESTAMP AS OF`: RFC 3339, or a date and time without a
/// zone (read as UTC, the session's time zone), or a date alone (midnight UTC).
fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// `sql` with JDBC-style `?` parameters numbered (`$1`, `$2`, ...) as DataFusion's planner wants
/// them; unchanged when it has none.
pub fn positional_parameters(sql: &str) -> String {
    if !sql.contains('?') {
        return sql.to_string();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return sql.to_string();
    };
    if !tokens
        .iter()
        .any(|t| matches!(t, Token::Placeholder(p) if p == "?"))
    {
        return sql.to_string();
    }
    let mut next = 0;
    tokens
        .into_iter()
        .map(|t| match t {
            Token::Placeholder(p) if p == "?" => {
                next += 1;
                format!("${next}")
            }
            other => other.to_string(),
        })
        .collect()
}

/// Splits `text` into the statements it ends with `;` (quotes and comments respected), and the
/// unfinished statement after the last one (empty when only blanks and comments are left).
pub fn split_statements(text: &str) -> (Vec<String>, String) {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Code,
        Quoted(char),
        LineComment,
        BlockComment,
    }
    let mut statements = Vec::new();
    let mut start = 0;
    let mut state = State::Code;
    // Whether the statement being read has anything but blanks and comments.
    let mut has_code = false;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let next = chars.get(i + 1).map(|(_, n)| *n);
        match state {
            State::Code => match c {
                '\'' | '"' | '`' => {
                    state = State::Quoted(c);
                    has_code = true;
                }
                '-' if next == Some('-') => state = State::LineComment,
                '/' if next == Some('*') => {
                    state = State::BlockComment;
                    i += 1;
                }
                ';' => {
                    if has_code {
                        statements.push(text[start..at].trim().to_string());
                    }
                    start = at + 1;
                    has_code = false;
                }
                c if !c.is_whitespace() => has_code = true,
                _ => {}
            },
            // A doubled quote inside quotes is the quote itself: leaving and re-entering the
            // quoted state at once reads it right.
            State::Quoted(q) if c == q => state = State::Code,
            State::Quoted(_) => {}
            State::LineComment if c == '\n' => state = State::Code,
            State::LineComment => {}
            State::BlockComment if c == '*' && next == Some('/') => {
                state = State::Code;
                i += 1;
            }
            State::BlockComment => {}
        }
        i += 1;
    }
    let rest = if has_code { &text[start..] } else { "" };
    (statements, rest.to_string())
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn version_as_of_names_the_versioned_table_and_keeps_the_name_as_alias() {
        let sql = time_travel("SELECT t.a FROM scores VERSION AS OF 3 AS t WHERE a > 1").unwrap();
        assert!(sql.contains(r#"FROM "scores@v3" AS t"#), "{sql}");
        let sql = time_travel("select count(*) from Scores version as of 0").unwrap();
        assert!(sql.contains(r#"FROM "scores@v0" AS Scores"#), "{sql}");
    }

    #[test]
    fn timestamp_as_of_reads_spark_timestamps_as_utc() {
        let sql =
            time_travel("SELECT * FROM scores TIMESTAMP AS OF '2026-11-29 10:00:00'").unwrap();
        assert!(sql.contains(r#""scores@t1795946400000""#), "{sql}");
        let sql = time_travel("SELECT * FROM scores TIMESTAMP AS OF '2026-11-29'").unwrap();
        assert!(sql.contains(r#""scores@t1795910400000""#), "{sql}");
        let sql = time_travel("SELECT * FROM scores TIMESTAMP AS OF '2026-11-29T11:00:00+01:00'")
            .unwrap();
        assert!(sql.contains(r#""scores@t1795946400000""#), "{sql}");
    }

    #[test]
    fn bad_time_travel_is_refused_naming_the_clause() {
        let err = time_travel("SELECT * FROM s TIMESTAMP AS OF 'yesterday'").unwrap_err();
        assert!(
            err.to_string().contains("`yesterday` is not a timestamp"),
            "{err}"
        );
        let err = time_travel("SELECT * FROM s TIMESTAMP AS OF now()").unwrap_err();
        assert!(err.to_string().contains("timestamp literal"), "{err}");
    }

    #[test]
    fn sql_without_time_travel_is_left_alone() {
        let sql = "SELECT 'AS OF' AS x FROM t";
        assert_eq!(time_travel(sql).unwrap(), sql);
    }

    #[test]
    fn describe_history_is_recognised() {
        assert_eq!(
            describe_history("describe history risk_scores;").unwrap(),
            Some(DescribeHistory {
                table: "risk_scores".into(),
                limit: None
            })
        );
        assert_eq!(
            describe_history("DESCRIBE HISTORY \"Odd\" LIMIT 2").unwrap(),
            Some(DescribeHistory {
                table: "Odd".into(),
                limit: Some(2)
            })
        );
        assert_eq!(describe_history("DESCRIBE risk_scores").unwrap(), None);
        assert!(describe_history("DESCRIBE HISTORY a b").is_err());
    }

    #[test]
    fn statements_split_on_semicolons_outside_quotes_and_comments() {
        let (done, rest) = split_statements(
            "SELECT 'a;b' AS x; -- one; two\nSELECT \"c;\" FROM t /* ; */ ;\nSELECT 'it''s;'",
        );
        assert_eq!(
            done,
            [
                "SELECT 'a;b' AS x",
                "-- one; two\nSELECT \"c;\" FROM t /* ; */"
            ]
        );
        assert_eq!(rest, "\nSELECT 'it''s;'");
        let (done, rest) = split_statements("SELECT 1;;\n-- the end\n/* ; */\n");
        assert_eq!(done, ["SELECT 1"]);
        assert_eq!(rest, "");
        assert_eq!(split_statements("SELECT 1 -- x").1, "SELECT 1 -- x");
    }

    #[test]
    fn question_marks_become_positional_parameters() {
        assert_eq!(
            positional_parameters("SELECT * FROM t WHERE a = ? AND b = '?' AND c > ?"),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND c > $2"
        );
        assert_eq!(positional_parameters("SELECT $1"), "SELECT $1");
    }
}
