//! Scalar functions that Riskstream's SQL calls: the risk rule sets (a score in [0, 1] with the
//! reason codes that fired), severity tiers, great-circle distance (`haversine_km`), Spark's `from_json`, Spark's event-time windows
//! (`window`, `session_window`), `approx_count_distinct`, and Spark's function library from
//! `datafusion-spark`.
//!
//! This crate depends on arrow and DataFusion only, so the same functions serve streaming jobs,
//! ad hoc SQL and the Flight SQL server.

mod approx;
mod ddl;
mod from_json;
mod geo;
mod interval;
pub mod model;
mod rules;
mod severity;
mod spark_sql;
mod time_window;

pub use approx::{APPROX_COUNT_DISTINCT, ApproxCountDistinct, relative_sd_allowed};
pub use ddl::parse_ddl_schema;
pub use from_json::FromJsonUdf;
pub use geo::{HaversineUdf, haversine_km};
pub use interval::{interval_text_us, interval_us};
pub use rules::{Rule, RuleSet, RuleSetUdf};
pub use severity::{SeverityTiers, SeverityUdf};
pub use spark_sql::spark_sql;
pub use time_window::{
    SESSION_COLUMN, SESSION_WINDOW, SessionWindowUdf, TimeWindow, TimeWindowRule, WINDOW,
    WINDOW_COLUMN, WindowUdf, merge_sessions, panes_of, session_gaps_us,
};

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

/// Registers Spark's functions (where `datafusion-spark` has them, and `from_json`), the severity
/// function and the
/// default rule sets of every source into `ctx`.
pub fn register_all(ctx: &mut SessionContext) -> datafusion::error::Result<()> {
    datafusion_spark::register_all(ctx)?;
    // datafusion-spark replaces `avg` with one that cannot retract rows, so it fails in a
    // sliding window frame (`AVG(x) OVER (... RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING ...)`),
    // which rolling features need. DataFusion's own gives the same results and retracts.
    ctx.register_udaf(
        datafusion::functions_aggregate::average::avg_udaf()
            .as_ref()
            .clone(),
    );
    // Spark's name for DataFusion's HyperLogLog count, and Spark's type (BIGINT).
    ctx.register_udaf(AggregateUDF::new_from_impl(ApproxCountDistinct::default()));
    ctx.register_udf(ScalarUDF::new_from_impl(FromJsonUdf::default()));
    ctx.register_udf(ScalarUDF::new_from_impl(HaversineUdf::default()));
    ctx.register_udf(ScalarUDF::new_from_impl(WindowUdf::default()));
    ctx.register_udf(ScalarUDF::new_from_impl(SessionWindowUdf::default()));
    ctx.add_analyzer_rule(std::sync::Arc::new(TimeWindowRule));
    register_scoring(ctx, &RuleSet::defaults(), &SeverityTiers::default());
    Ok(())
}

/// Registers the given rule sets and severity tiers, replacing functions of the same names.
pub fn register_scoring(ctx: &SessionContext, rule_sets: &[RuleSet], tiers: &SeverityTiers) {
    for set in rule_sets {
        ctx.register_udf(ScalarUDF::new_from_impl(RuleSetUdf::new(set.clone())));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(SeverityUdf::new(tiers.clone())));
}
