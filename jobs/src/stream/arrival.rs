//! Rolling features over rows made from the stream's with tables read beside it: a join (`FROM
//! transactions t JOIN merchants m ON ...`, windows reading `m.risk`), or a WHERE reading a
//! subquery (`WHERE merchant_id NOT IN (SELECT id FROM trusted)`). What each event gives there
//! depends on the event and those tables alone, so that part of the query runs on the events as
//! they arrive, over the tables as that batch reads them (as Spark's stream-static joins and
//! filters do), and the incremental state keeps the resulting rows' columns as it keeps the
//! stream's own. The rest of the query is planned over a view of those rows
//! ([`ARRIVAL_VIEW`]) in place of that part.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::Column;

use crate::error::{JobError, Result};
use crate::stream::aggregate::reads_stream;
use crate::stream::incremental::{arriving_in, filters_by_subquery, row_local};

/// The name the arriving rows are planned under.
pub const ARRIVAL_VIEW: &str = "riskstream_arriving_rows";

/// The part of the query below the windows that runs on the events as they arrive.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Its columns, each under a name of its own (one that two tables have is prefixed with
    /// its table's name and `_`; never a dot, which DataFusion may read as a qualifier): the
    /// rows the state takes.
    pub flat: SchemaRef,
    /// Where the stream's event time is among them.
    pub time_index: usize,
    /// What that part does, for the plan output.
    pub what: String,
}

impl Arrival {
    /// For `root`, the part below the windows of `plan` that must run as the events arrive
    /// (over the view `view` of rows `input`, the event time at `time_index`): `plan` with that
    /// part replaced by a scan of its rows, and how to make them; or why it cannot run so.
    pub fn plan(
        plan: &LogicalPlan,
        root: &LogicalPlan,
        view: &str,
        input: &SchemaRef,
        time_index: usize,
    ) -> std::result::Result<(LogicalPlan, Self), String> {
        let time_index = stream_time(root, view, input.field(time_index).name())?;
        let schema = root.schema().as_ref();
        let mut taken = HashSet::new();
        let mut fields = Vec::with_capacity(schema.fields().len());
        for (q, f) in schema.iter() {
            let shared = schema.iter().filter(|(_, g)| g.name() == f.name()).count() > 1;
            let mut name = match q {
                Some(q) if shared => format!("{}_{}", q.table(), f.name()),
                _ => f.name().clone(),
            };
            while !taken.insert(name.clone()) {
                name.push('_');
            }
            fields.push(f.as_ref().clone().with_name(name));
        }
        let flat = Arc::new(Schema::new(fields));
        let planning = |e: datafusion::error::DataFusionError| e.to_string();
        let table = MemTable::try_new(Arc::clone(&flat), vec![vec![]]).map_err(planning)?;
        // The rows under the part's own qualified names, so that nothing above it changes.
        let named: Vec<Expr> = schema
            .iter()
            .zip(flat.fields())
            .map(|((q, f), flat)| {
                Expr::Column(Column::from_name(flat.name())).alias_qualified(q.cloned(), f.name())
            })
            .collect();
        let scan =
            LogicalPlanBuilder::scan(ARRIVAL_VIEW, provider_as_source(Arc::new(table)), None)
                .and_then(|b| b.project(named))
                .and_then(|b| b.build())
                .map_err(planning)?;
        let rewritten = plan
            .clone()
            .transform_down(|node| {
                Ok(if node == *root {
                    Transformed::new(scan.clone(), true, TreeNodeRecursion::Jump)
                } else {
                    Transformed::no(node)
                })
            })
            .map_err(planning)?
            .data;
        Ok((
            rewritten,
            Self {
                flat,
                time_index,
                what: described(root, view),
            },
        ))
    }

    /// `plan` (the query planned over a batch's rows) cut down to the part below its windows
    /// that runs as the events arrive, the columns under their flat names: the batch's rows as
    /// the state takes them.
    pub fn joined(&self, plan: &LogicalPlan) -> Result<LogicalPlan> {
        let root = arriving_in(plan).ok_or_else(|| {
            JobError::internal("the part below the windows run on arrival is gone".into())
        })?;
        let flat: Vec<Expr> = root
            .schema()
            .iter()
            .zip(self.flat.fields())
            .map(|((q, f), flat)| {
                Expr::Column(Column::new(q.cloned(), f.name())).alias(flat.name())
            })
            .collect();
        LogicalPlanBuilder::from(root.clone())
            .project(flat)
            .and_then(|b| b.build())
            .map_err(|e| JobError::internal(format!("the arriving events' rows: {e}")))
    }
}

/// What `root`, the part run as the events arrive, does: its join and the tables it reads, or
/// its WHERE.
fn described(root: &LogicalPlan, view: &str) -> String {
    let mut tables: Vec<String> = Vec::new();
    let _ = root.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.table() != view
        {
            let name = scan.table_name.to_string();
            if !tables.contains(&name) {
                tables.push(name);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let tables = if tables.is_empty() {
        "values given in the query".to_string()
    } else {
        tables.join(", ")
    };
    match root {
        LogicalPlan::Join(j) => {
            let join = match j.join_type {
                JoinType::Inner => "an inner join",
                JoinType::Left | JoinType::Right => "an outer join keeping every event",
                JoinType::LeftSemi => "a semi join",
                JoinType::LeftAnti => "an anti join",
                _ => "a join",
            };
            format!("{join} with {tables}")
        }
        LogicalPlan::Filter(f) => format!("WHERE {} (reading {tables})", f.predicate),
        _ => format!("a part reading {tables}"),
    }
}

/// Where the view's event time (`time`) is among the columns of `node`, whose rows are made from
/// the stream's one event at a time: the view's scan under WHEREs, aliases, projections that
/// pass the column on, and joins with tables beside the stream that keep every event or drop
/// some; or why not.
fn stream_time(node: &LogicalPlan, view: &str, time: &str) -> std::result::Result<usize, String> {
    let fixed = "a value fixed when the query is planned (such as now())";
    match node {
        LogicalPlan::TableScan(scan) if scan.table_name.table() == view => node
            .schema()
            .fields()
            .iter()
            .position(|f| f.name() == time)
            .ok_or_else(|| format!("the stream's scan lacks `{time}`")),
        LogicalPlan::SubqueryAlias(a) => stream_time(&a.input, view, time),
        LogicalPlan::Filter(f) => {
            if !row_local(&f.predicate) && !filters_by_subquery(&f.predicate) {
                return Err(format!("a WHERE below the windows reads {fixed}"));
            }
            stream_time(&f.input, view, time)
        }
        LogicalPlan::Projection(p) => {
            if !p.expr.iter().all(row_local) {
                return Err(format!(
                    "a projection below the windows reads {fixed} or a subquery"
                ));
            }
            let at = stream_time(&p.input, view, time)?;
            let (q, f) = p.input.schema().qualified_field(at);
            p.expr
                .iter()
                .position(|e| {
                    matches!(e.clone().unalias(), Expr::Column(c)
                        if c.name == *f.name() && (c.relation.is_none() || c.relation.as_ref() == q))
                })
                .ok_or_else(|| format!("a projection below the windows drops `{time}`"))
        }
        LogicalPlan::Join(j) => {
            let reads = |side: &LogicalPlan| reads_stream(side, view);
            let stream_left = match (j.join_type, reads(&j.left), reads(&j.right)) {
                // A semi or anti join keeps some of the events, as a WHERE does.
                (
                    JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti,
                    true,
                    false,
                ) => true,
                (JoinType::Inner | JoinType::Right, false, true) => false,
                (_, false, false) => {
                    return Err("a join below the windows reads the stream in a subquery".into());
                }
                (t, _, _) => {
                    return Err(format!(
                        "the windows read a join of the stream ({t}) that makes rows no event \
                         matched; an inner join, or an outer one that keeps every event, runs \
                         as the events arrive"
                    ));
                }
            };
            let compares = j.on.iter().flat_map(|(l, r)| [l, r]).chain(&j.filter);
            if !compares.into_iter().all(row_local) {
                return Err(format!(
                    "a join below the windows compares with a subquery or {fixed}"
                ));
            }
            if stream_left {
                stream_time(&j.left, view, time)
            } else {
                Ok(j.left.schema().fields().len() + stream_time(&j.right, view, time)?)
            }
        }
        LogicalPlan::Union(_) => Err("the windows read a union of the stream".into()),
        LogicalPlan::Aggregate(_) | LogicalPlan::Distinct(_) => {
            Err("the windows read a grouping of the stream".into())
        }
        _ => Err("the windows read another operator over the stream".into()),
    }
}
