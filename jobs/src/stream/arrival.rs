//! Rolling features over a join of the stream with tables read beside it (`FROM transactions t
//! JOIN merchants m ON ...`, windows reading `m.risk`). An event's joined rows depend on the
//! event and those tables alone, so the join runs on the events as they arrive, over the tables
//! as that batch reads them (what Spark's stream-static join does), and the incremental state
//! keeps the joined rows' columns as it keeps the stream's own. The query is then planned over
//! a view of the joined rows ([`ARRIVAL_VIEW`]) in place of the join.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::{
    Expr, Filter, JoinType, LogicalPlan, LogicalPlanBuilder, Projection, SubqueryAlias,
};
use datafusion::prelude::Column;

use crate::error::{JobError, Result};
use crate::stream::incremental::{below_windows, row_local};

/// The name the joined rows are planned under.
pub const ARRIVAL_VIEW: &str = "riskstream_joined_events";

/// The join the windows read, as the state takes its rows.
#[derive(Debug, Clone)]
pub struct ArrivalJoin {
    /// The join's columns, each under a name of its own (one that both sides have is prefixed
    /// with its table's name and `_`; never a dot, which DataFusion may read as a qualifier):
    /// the rows the state takes.
    pub flat: SchemaRef,
    /// Where the stream's event time is among them.
    pub time_index: usize,
}

impl ArrivalJoin {
    /// For the join `join` that the windows of `plan` read (through WHEREs, projections and
    /// aliases) over the view `view` (rows of `input`, the event time at `time_index`): `plan`
    /// with the join replaced by a scan of the joined rows, and how to join them; or why the
    /// join cannot run as the events arrive.
    pub fn plan(
        plan: &LogicalPlan,
        join: &LogicalPlan,
        view: &str,
        input: &SchemaRef,
        time_index: usize,
    ) -> std::result::Result<(LogicalPlan, Self), String> {
        let LogicalPlan::Join(j) = join else {
            return Err("the node below the windows is not a join".into());
        };
        let reads = |side: &LogicalPlan| {
            side.exists(|node| {
                Ok(matches!(node, LogicalPlan::TableScan(s) if s.table_name.table() == view))
            })
            .unwrap_or(true)
        };
        let stream_left = match (j.join_type, reads(&j.left), reads(&j.right)) {
            (JoinType::Inner | JoinType::Left, true, false) => true,
            (JoinType::Inner | JoinType::Right, false, true) => false,
            (_, false, false) => {
                return Err("the join below the windows reads the stream in a subquery".into());
            }
            (t, _, _) => {
                return Err(format!(
                    "the windows read a join of the stream ({t}) that makes rows no event \
                     matched; an inner join, or an outer one that keeps every event, runs as \
                     the events arrive"
                ));
            }
        };
        let fixed = j.on.iter().any(|(l, r)| !row_local(l) || !row_local(r))
            || j.filter.as_ref().is_some_and(|f| !row_local(f));
        if fixed {
            return Err(
                "the join below the windows compares with a subquery or a value fixed when \
                 the query is planned (such as now())"
                    .into(),
            );
        }
        let stream = if stream_left { &j.left } else { &j.right };
        let time = event_time_through(stream, view, input.field(time_index).name())?;
        let time_index = if stream_left {
            time
        } else {
            j.left.schema().fields().len() + time
        };
        let schema = j.schema.as_ref();
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
        // The joined rows under the join's own qualified names, so that nothing above changes.
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
                Ok(if node == *join {
                    Transformed::new(scan.clone(), true, TreeNodeRecursion::Jump)
                } else {
                    Transformed::no(node)
                })
            })
            .map_err(planning)?
            .data;
        Ok((rewritten, Self { flat, time_index }))
    }

    /// `plan` (the query planned over a batch's rows) cut down to the join its windows read,
    /// the columns under their flat names: the batch's rows as the state takes them.
    pub fn joined(&self, plan: &LogicalPlan) -> Result<LogicalPlan> {
        let join = below_windows(plan)
            .filter(|node| matches!(node, LogicalPlan::Join(_)))
            .ok_or_else(|| JobError::internal("the join below the windows is gone".into()))?;
        let flat: Vec<Expr> = join
            .schema()
            .iter()
            .zip(self.flat.fields())
            .map(|((q, f), flat)| {
                Expr::Column(Column::new(q.cloned(), f.name())).alias(flat.name())
            })
            .collect();
        LogicalPlanBuilder::from(join.clone())
            .project(flat)
            .and_then(|b| b.build())
            .map_err(|e| JobError::internal(format!("joining the arriving events: {e}")))
    }
}

/// Where the view's event time (`time`) is among the columns of `side`, the stream's side of
/// the join: the view's scan under WHEREs, aliases and projections that pass the column on.
fn event_time_through(
    side: &LogicalPlan,
    view: &str,
    time: &str,
) -> std::result::Result<usize, String> {
    let mut chain = Vec::new();
    let mut node = side;
    while let LogicalPlan::Filter(Filter { input, .. })
    | LogicalPlan::SubqueryAlias(SubqueryAlias { input, .. })
    | LogicalPlan::Projection(Projection { input, .. }) = node
    {
        chain.push(node);
        node = input.as_ref();
    }
    if !matches!(node, LogicalPlan::TableScan(s) if s.table_name.table() == view) {
        return Err(
            "the stream's side of the join below the windows is more than its rows \
                    (another join, a union or a grouping)"
                .into(),
        );
    }
    let mut name = time.to_string();
    for node in chain.iter().rev() {
        if let LogicalPlan::Projection(p) = node {
            let passed = p
                .expr
                .iter()
                .position(|e| matches!(e.clone().unalias(), Expr::Column(c) if c.name == name));
            let Some(at) = passed else {
                return Err(format!(
                    "the stream's side of the join below the windows drops `{time}`"
                ));
            };
            name = p.schema.field(at).name().clone();
        }
    }
    side.schema()
        .fields()
        .iter()
        .position(|f| *f.name() == name)
        .ok_or_else(|| format!("the stream's side of the join below the windows drops `{time}`"))
}
