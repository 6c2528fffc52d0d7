//! Spark's `approx_count_distinct(expr[, relativeSD])`: DataFusion's HyperLogLog
//! (`approx_distinct`) under Spark's name, giving Spark's type (a BIGINT, where DataFusion gives
//! an unsigned one, which Delta tables cannot hold). `relativeSD` is checked as Spark checks it
//! and otherwise unused: DataFusion's sketch (2^14 registers, about 0.8% standard error) is
//! finer than Spark's default (5%). Over a window frame that slides, the count is
//! exact (a sketch cannot drop the values that leave the frame).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, FieldRef, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::functions_aggregate::approx_distinct::approx_distinct_udaf;
use datafusion::functions_aggregate::count::SlidingDistinctCountAccumulator;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature,
    TypeSignature, Volatility,
};

/// The name Spark gives it.
pub const APPROX_COUNT_DISTINCT: &str = "approx_count_distinct";

/// `approx_count_distinct`: DataFusion's `approx_distinct` as a BIGINT.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ApproxCountDistinct {
    signature: Signature,
    inner: Arc<AggregateUDF>,
}

impl Default for ApproxCountDistinct {
    fn default() -> Self {
        Self {
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Immutable,
            ),
            inner: approx_distinct_udaf(),
        }
    }
}

impl AggregateUDFImpl for ApproxCountDistinct {
    fn name(&self) -> &str {
        APPROX_COUNT_DISTINCT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if let Some(sd) = args.get(1)
            && !sd.is_numeric()
        {
            return plan_err!("{APPROX_COUNT_DISTINCT}: relativeSD must be a number, not {sd}");
        }
        Ok(DataType::Int64)
    }

    fn default_value(&self, _: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.inner().state_fields(StateFieldsArgs {
            input_fields: &args.input_fields[..1],
            ..args
        })
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        check_relative_sd(&args)?;
        Ok(Box::new(AsBigint(self.inner.inner().accumulator(args)?)))
    }

    /// A frame that slides (`RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW`) drops
    /// values as it moves, which a sketch cannot: such frames are counted exactly, by a count
    /// of each value in the frame (well within any error Spark allows).
    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        check_relative_sd(&args)?;
        Ok(Box::new(AsBigint(Box::new(
            SlidingDistinctCountAccumulator::try_new(args.expr_fields[0].data_type())?,
        ))))
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.inner().groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        check_relative_sd(&args)?;
        Ok(Box::new(GroupsAsBigint(
            self.inner.inner().create_groups_accumulator(args)?,
        )))
    }
}

/// Spark's bound on `relativeSD` (a constant; its sketch cannot be finer than 0.01).
fn check_relative_sd(args: &AccumulatorArgs) -> Result<()> {
    use datafusion::physical_expr::expressions::Literal;
    let Some(expr) = args.exprs.get(1) else {
        return Ok(());
    };
    match expr.downcast_ref::<Literal>() {
        Some(sd) => relative_sd_allowed(sd.value()).or_else(|e| exec_err!("{e}")),
        None => exec_err!("{APPROX_COUNT_DISTINCT}: relativeSD must be a constant number"),
    }
}

/// Whether `sd` is a `relativeSD` Spark accepts; if not, why, for a streaming job to refuse at
/// start what a batch would fail on. Spark sizes its sketch from it (`2^p` registers, `p =
/// ceil(2 log2(1.106 / sd))`) and needs `p` of at least 4, so at most about 0.39.
pub fn relative_sd_allowed(sd: &ScalarValue) -> std::result::Result<(), String> {
    match sd.cast_to(&DataType::Float64) {
        Ok(ScalarValue::Float64(Some(sd)))
            if sd > 0.0 && sd.is_finite() && (2.0 * (1.106 / sd).log2()).ceil() >= 4.0 =>
        {
            Ok(())
        }
        Ok(ScalarValue::Float64(Some(sd))) => Err(format!(
            "{APPROX_COUNT_DISTINCT}: relativeSD must be above 0 and at most 0.39 (the sketch \
             needs at least 4 bits of address), not {sd}"
        )),
        _ => Err(format!(
            "{APPROX_COUNT_DISTINCT}: relativeSD must be a constant number, not {sd}"
        )),
    }
}

/// The first argument only: the second is `relativeSD`.
fn first(values: &[ArrayRef]) -> &[ArrayRef] {
    &values[..values.len().min(1)]
}

fn as_bigint(counts: &ArrayRef) -> ArrayRef {
    let counts = counts.as_primitive::<UInt64Type>();
    Arc::new(Int64Array::new(
        counts.values().iter().map(|&n| n as i64).collect(),
        counts.nulls().cloned(),
    ))
}

/// An accumulator over the first argument only, counting in a BIGINT: DataFusion's sketch (whose
/// count is unsigned) or its exact count for sliding frames (already a BIGINT).
#[derive(Debug)]
struct AsBigint(Box<dyn Accumulator>);

impl Accumulator for AsBigint {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.update_batch(first(values))
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0.retract_batch(first(values))
    }

    fn supports_retract_batch(&self) -> bool {
        self.0.supports_retract_batch()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        match self.0.evaluate()? {
            ScalarValue::UInt64(n) => Ok(ScalarValue::Int64(n.map(|n| n as i64))),
            count @ ScalarValue::Int64(_) => Ok(count),
            other => exec_err!("{APPROX_COUNT_DISTINCT}: an unexpected count {other:?}"),
        }
    }

    fn size(&self) -> usize {
        self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.0.merge_batch(states)
    }
}

struct GroupsAsBigint(Box<dyn GroupsAccumulator>);

impl GroupsAccumulator for GroupsAsBigint {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.0
            .update_batch(first(values), group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(as_bigint(&self.0.evaluate(emit_to)?))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.0.state(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.0.merge_batch(values, group_indices, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        self.0.convert_to_state(first(values), opt_filter)
    }

    fn size(&self) -> usize {
        self.0.size()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::prelude::SessionContext;

    async fn rows(sql: &str) -> Vec<Option<i64>> {
        let mut ctx = SessionContext::new();
        crate::register_all(&mut ctx).unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let counts = b
                    .column(b.num_columns() - 1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("a BIGINT");
                counts.iter().collect::<Vec<_>>()
            })
            .collect()
    }

    const VALUES: &str = "(VALUES (1, 'a'), (1, 'b'), (1, 'a'), (2, NULL), (2, 'c'), (3, NULL)) \
                          AS t(k, v)";

    #[tokio::test]
    async fn approx_count_distinct_counts_distinct_values_as_a_bigint() {
        // Few values: the sketch counts them exactly. Nulls are not values.
        let sql = format!("SELECT approx_count_distinct(v) FROM {VALUES}");
        assert_eq!(rows(&sql).await, [Some(3)]);
        let sql =
            format!("SELECT k, approx_count_distinct(v, 0.05) FROM {VALUES} GROUP BY k ORDER BY k");
        assert_eq!(rows(&sql).await, [Some(2), Some(1), Some(0)]);
        let sql = format!("SELECT k, approx_count_distinct(k) FROM {VALUES} GROUP BY k ORDER BY k");
        assert_eq!(rows(&sql).await, [Some(1), Some(1), Some(1)]);
        let sql = format!(
            "SELECT k, approx_count_distinct(v) OVER (ORDER BY k RANGE BETWEEN 1 PRECEDING AND \
             CURRENT ROW) FROM {VALUES} ORDER BY k"
        );
        assert_eq!(
            rows(&sql).await,
            [Some(2), Some(2), Some(2), Some(3), Some(3), Some(1)]
        );
        // A frame that only grows keeps the sketch.
        let sql = format!(
            "SELECT k, approx_count_distinct(v) OVER (ORDER BY k RANGE BETWEEN UNBOUNDED \
             PRECEDING AND CURRENT ROW) FROM {VALUES} ORDER BY k"
        );
        assert_eq!(
            rows(&sql).await,
            [Some(2), Some(2), Some(2), Some(3), Some(3), Some(3)]
        );
    }

    #[tokio::test]
    async fn a_relative_sd_outside_sparks_bounds_is_refused() {
        let mut ctx = SessionContext::new();
        crate::register_all(&mut ctx).unwrap();
        for sd in ["0.5", "0.392", "0", "-0.1"] {
            let sql = format!("SELECT approx_count_distinct(v, {sd}) FROM {VALUES}");
            let err = match ctx.sql(&sql).await {
                Ok(df) => df.collect().await.unwrap_err(),
                Err(e) => e,
            };
            assert!(err.to_string().contains("relativeSD"), "{err}");
        }
        // Spark's bound is above only: a finer sketch than the default is allowed.
        for sd in ["0.39", "0.001"] {
            let sql = format!("SELECT approx_count_distinct(v, {sd}) FROM {VALUES}");
            assert_eq!(rows(&sql).await, [Some(3)], "{sd}");
        }
    }
}
