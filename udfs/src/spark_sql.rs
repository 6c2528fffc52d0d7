//! Spark SQL that DataFusion's planner does not read as Spark does, rewritten before planning.
//!
//! Spark names the struct a `window()` or `session_window()` in GROUP BY gives after the
//! function: `SELECT window.start, count(*) ... GROUP BY window(ts, '5 minutes')`. DataFusion
//! would look for a table `window`; the rewrite puts the grouped call in its place
//! (`get_field(window(ts, '5 minutes'), 'start') AS start`), which the planner matches to the
//! GROUP BY.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
    GroupByExpr, Ident, ObjectName, Query, SelectItem, SetExpr, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::time_window::{SESSION_WINDOW, WINDOW};

/// `sql` with Spark's references to a grouped window rewritten; unchanged when it has none (or
/// does not parse: the planner then reports the error).
pub fn spark_sql(sql: &str) -> String {
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("window") || !lower.contains("group") {
        return sql.to_string();
    }
    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, sql) else {
        return sql.to_string();
    };
    let mut rewrite = WindowReferences { changed: false };
    let _ = statements.visit(&mut rewrite);
    if !rewrite.changed {
        return sql.to_string();
    }
    statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";\n")
}

struct WindowReferences {
    changed: bool,
}

impl VisitorMut for WindowReferences {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let GroupByExpr::Expressions(keys, _) = &select.group_by else {
            return ControlFlow::Continue(());
        };
        let Some((name, call)) = keys.iter().find_map(|k| match k {
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                [WINDOW, SESSION_WINDOW]
                    .contains(&name.as_str())
                    .then(|| (name, k.clone()))
            }
            _ => None,
        }) else {
            return ControlFlow::Continue(());
        };
        for item in &mut select.projection {
            let replaced = match item {
                SelectItem::UnnamedExpr(e) => {
                    let alias = match e {
                        Expr::Identifier(id) if id.value.eq_ignore_ascii_case(&name) => {
                            Some(id.clone())
                        }
                        Expr::CompoundIdentifier(ids)
                            if ids.len() == 2 && ids[0].value.eq_ignore_ascii_case(&name) =>
                        {
                            Some(ids[1].clone())
                        }
                        _ => None,
                    };
                    let changed = replace(e, &name, &call);
                    match (changed, alias) {
                        (true, Some(alias)) => Some(SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias,
                        }),
                        _ => {
                            self.changed |= changed;
                            None
                        }
                    }
                }
                SelectItem::ExprWithAlias { expr, .. } => {
                    self.changed |= replace(expr, &name, &call);
                    None
                }
                _ => None,
            };
            if let Some(new) = replaced {
                *item = new;
                self.changed = true;
            }
        }
        if let Some(having) = &mut select.having {
            self.changed |= replace(having, &name, &call);
        }
        ControlFlow::Continue(())
    }
}

/// Replaces `name` and `name.field` in `expr` with the grouped `call` and its field; true when
/// something was replaced.
fn replace(expr: &mut Expr, name: &str, call: &Expr) -> bool {
    let mut changed = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(expr, |e: &mut Expr| {
        match e {
            Expr::Identifier(id) if id.value.eq_ignore_ascii_case(name) => {
                *e = call.clone();
                changed = true;
            }
            Expr::CompoundIdentifier(ids)
                if ids.len() == 2 && ids[0].value.eq_ignore_ascii_case(name) =>
            {
                *e = field_of(call.clone(), &ids[1].value);
                changed = true;
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// `get_field(expr, 'field')`.
fn field_of(expr: Expr, field: &str) -> Expr {
    let arg = |e: Expr| FunctionArg::Unnamed(FunctionArgExpr::Expr(e));
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("get_field")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![
                arg(expr),
                arg(Expr::Value(
                    Value::SingleQuotedString(field.to_string()).into(),
                )),
            ],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fields_become_the_grouped_call() {
        let out = spark_sql(
            "SELECT user_id, window.start, window.end AS e, count(*) FROM t \
             GROUP BY user_id, window(ts, '10 minutes')",
        );
        assert!(
            out.contains("get_field(window(ts, '10 minutes'), 'start') AS start"),
            "{out}"
        );
        assert!(
            out.contains("get_field(window(ts, '10 minutes'), 'end') AS e"),
            "{out}"
        );
        let out = spark_sql(
            "SELECT session_window, n FROM (SELECT 1) GROUP BY session_window(ts, '1 minute')",
        );
        assert!(
            out.contains("session_window(ts, '1 minute') AS session_window"),
            "{out}"
        );
        // Nothing to do: the text is kept as written.
        let plain = "select  a FROM t GROUP BY a";
        assert_eq!(spark_sql(plain), plain);
    }
}
