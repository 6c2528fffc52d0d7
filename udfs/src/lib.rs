//! Scalar functions that Riskstream's SQL calls: the risk rule sets (a score in [0, 1] with the
//! reason codes that fired), severity tiers, great-circle distance (`haversine_km`), Spark's `from_json`, and Spark's function library from
//! `datafusion-spark`.
//!
//! This crate depends on arrow and DataFusion only, so the same functions serve streaming jobs,
//! ad hoc SQL and the Flight SQL server.

mod ddl;
mod from_json;
mod geo;
mod rules;
mod severity;

pub use ddl::parse_ddl_schema;
pub use from_json::FromJsonUdf;
pub use geo::{HaversineUdf, haversine_km};
pub use rules::{Rule, RuleSet, RuleSetUdf};
pub use severity::{SeverityTiers, SeverityUdf};

use datafusion::logical_expr::ScalarUDF;
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
    ctx.register_udf(ScalarUDF::new_from_impl(FromJsonUdf::default()));
    ctx.register_udf(ScalarUDF::new_from_impl(HaversineUdf::default()));
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
