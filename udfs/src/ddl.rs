//! Spark's DDL schema strings, as `from_json` takes them: `a STRING, b DOUBLE`,
//! `STRUCT<a: STRING, b: ARRAY<INT>>`, backquoted names, `DECIMAL(10,2)`, `MAP<STRING, INT>`.
//! Every field is nullable, as in Spark; `TIMESTAMP` is microseconds in UTC, Spark's precision.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// Parses a DDL schema string into the fields of a struct.
pub fn parse_ddl_schema(text: &str) -> Result<Fields, String> {
    let mut p = Parser {
        tokens: tokenize(text)?,
        at: 0,
        text,
    };
    let fields = if p.peek_word("STRUCT") && p.tokens.get(1).map(String::as_str) == Some("<") {
        match p.data_type()? {
            DataType::Struct(fields) => fields,
            _ => return Err(p.error("expected a STRUCT")),
        }
    } else {
        p.field_list(None)?
    };
    if p.at < p.tokens.len() {
        return Err(p.error(&format!("unexpected `{}`", p.tokens[p.at])));
    }
    if fields.is_empty() {
        return Err(format!("`{text}` declares no field"));
    }
    Ok(fields)
}

fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '`' {
            chars.next();
            let mut name = String::from("`");
            loop {
                match chars.next() {
                    Some('`') if chars.peek() == Some(&'`') => {
                        chars.next();
                        name.push('`');
                    }
                    Some('`') => break,
                    Some(ch) => name.push(ch),
                    None => return Err(format!("`{text}`: unclosed backquote")),
                }
            }
            tokens.push(name);
        } else if "<>(),:".contains(c) {
            chars.next();
            tokens.push(c.to_string());
        } else {
            let mut word = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || "<>(),:`".contains(ch) {
                    break;
                }
                word.push(ch);
                chars.next();
            }
            tokens.push(word);
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<String>,
    at: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("schema `{}`: {what}", self.text)
    }

    fn peek_word(&self, word: &str) -> bool {
        self.tokens
            .get(self.at)
            .is_some_and(|t| t.eq_ignore_ascii_case(word))
    }

    fn next(&mut self) -> Result<String, String> {
        let token = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or_else(|| self.error("ends too early"))?;
        self.at += 1;
        Ok(token)
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        let got = self.next()?;
        if got == token {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{token}`, found `{got}`")))
        }
    }

    /// `name type, name type` up to `close` (or the end).
    fn field_list(&mut self, close: Option<&str>) -> Result<Fields, String> {
        let mut fields = Vec::new();
        loop {
            if close.is_some_and(|c| self.tokens.get(self.at).map(String::as_str) == Some(c))
                || self.at >= self.tokens.len()
            {
                break;
            }
            let raw = self.next()?;
            let name = raw.strip_prefix('`').unwrap_or(&raw).to_string();
            if self.tokens.get(self.at).map(String::as_str) == Some(":") {
                self.at += 1;
            }
            let data_type = self.data_type()?;
            // Spark allows `NOT NULL` and `COMMENT '...'`; from_json ignores both.
            if self.peek_word("NOT") {
                self.at += 2;
            }
            fields.push(Field::new(name, data_type, true));
            if self.tokens.get(self.at).map(String::as_str) == Some(",") {
                self.at += 1;
            } else {
                break;
            }
        }
        Ok(Fields::from(fields))
    }

    fn data_type(&mut self) -> Result<DataType, String> {
        let word = self.next()?.to_ascii_uppercase();
        Ok(match word.as_str() {
            "STRING" | "TEXT" => DataType::Utf8,
            "VARCHAR" | "CHAR" => {
                self.expect("(")?;
                self.next()?;
                self.expect(")")?;
                DataType::Utf8
            }
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "TINYINT" | "BYTE" => DataType::Int8,
            "SMALLINT" | "SHORT" => DataType::Int16,
            "INT" | "INTEGER" => DataType::Int32,
            "BIGINT" | "LONG" => DataType::Int64,
            "FLOAT" | "REAL" => DataType::Float32,
            "DOUBLE" => DataType::Float64,
            "DATE" => DataType::Date32,
            "TIMESTAMP" | "TIMESTAMP_LTZ" => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            "TIMESTAMP_NTZ" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "BINARY" => DataType::Binary,
            "DECIMAL" | "DEC" | "NUMERIC" => {
                let (mut precision, mut scale) = (10u8, 0i8);
                if self.tokens.get(self.at).map(String::as_str) == Some("(") {
                    self.at += 1;
                    precision = self
                        .next()?
                        .parse()
                        .map_err(|_| self.error("bad DECIMAL precision"))?;
                    if self.tokens.get(self.at).map(String::as_str) == Some(",") {
                        self.at += 1;
                        scale = self
                            .next()?
                            .parse()
                            .map_err(|_| self.error("bad DECIMAL scale"))?;
                    }
                    self.expect(")")?;
                }
                DataType::Decimal128(precision, scale)
            }
            "ARRAY" => {
                self.expect("<")?;
                let item = self.data_type()?;
                self.expect(">")?;
                DataType::List(Arc::new(Field::new_list_field(item, true)))
            }
            "MAP" => {
                self.expect("<")?;
                let key = self.data_type()?;
                self.expect(",")?;
                let value = self.data_type()?;
                self.expect(">")?;
                let entries = Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", key, false),
                        Field::new("value", value, true),
                    ])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
            "STRUCT" => {
                self.expect("<")?;
                let fields = self.field_list(Some(">"))?;
                self.expect(">")?;
                DataType::Struct(fields)
            }
            other => return Err(self.error(&format!("unknown type `{other}`"))),
        })
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sparks_ddl_forms_parse() {
        let fields = parse_ddl_schema(
            "event_id STRING, amount DOUBLE, n BIGINT, `odd name` INT, at TIMESTAMP, \
             tags ARRAY<STRING>, price DECIMAL(10, 2), attrs MAP<STRING, INT>, \
             geo STRUCT<lat: DOUBLE, lon DOUBLE>",
        )
        .unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "event_id", "amount", "n", "odd name", "at", "tags", "price", "attrs", "geo"
            ]
        );
        assert_eq!(fields[1].data_type(), &DataType::Float64);
        assert_eq!(fields[6].data_type(), &DataType::Decimal128(10, 2));
        assert!(matches!(fields[8].data_type(), DataType::Struct(f) if f.len() == 2));
        assert!(fields.iter().all(|f| f.is_nullable()));

        let wrapped = parse_ddl_schema("struct<a: int, b: string>").unwrap();
        assert_eq!(wrapped.len(), 2);
    }

    #[test]
    fn mistakes_are_explained() {
        for bad in ["a STRNG", "a ARRAY<INT", "", "a INT b INT", "a DECIMAL(x)"] {
            let err = parse_ddl_schema(bad).unwrap_err();
            assert!(
                err.contains("schema") || err.contains("no field"),
                "{bad}: {err}"
            );
        }
    }
}
