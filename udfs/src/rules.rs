//! Rule sets: named boolean signals computed in SQL, each with a weight, combined into one risk
//! score with the reason codes that fired.
//!
//! Signals combine as a noisy OR, `1 - Π(1 - weight)` over the rules that fired, so every rule
//! raises the score, no combination leaves [0, 1], and one strong rule alone can reach a high tier.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Builder, ListBuilder, StringBuilder, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use serde::Deserialize;

/// One rule: a reason code and how much it alone contributes to the score.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rule {
    /// Reason code reported when the rule fires, such as `velocity_5m`.
    pub code: String,
    /// Contribution in [0, 1] when the rule fires.
    pub weight: f64,
}

impl Rule {
    /// A rule with `code` and `weight`.
    pub fn new(code: &str, weight: f64) -> Self {
        Self {
            code: code.to_string(),
            weight,
        }
    }
}

/// A named, ordered list of rules; the SQL function of the same name takes one boolean per rule,
/// in this order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RuleSet {
    /// The SQL function name, such as `transaction_rules`.
    pub name: String,
    /// The rules, in argument order.
    pub rules: Vec<Rule>,
}

impl RuleSet {
    /// The rule sets the shipped scoring SQL (`sql/scoring/*.sql`) calls, with their default weights.
    pub fn defaults() -> Vec<RuleSet> {
        vec![
            RuleSet {
                name: "transaction_rules".into(),
                rules: vec![
                    Rule::new("velocity_5m", 0.45),
                    Rule::new("card_testing", 0.5),
                    Rule::new("impossible_travel", 0.6),
                    Rule::new("amount_vs_user_avg", 0.3),
                    Rule::new("new_device", 0.15),
                    Rule::new("high_amount", 0.3),
                    Rule::new("foreign_card", 0.15),
                    Rule::new("night_time", 0.1),
                    Rule::new("high_risk_merchant", 0.15),
                    Rule::new("new_account", 0.3),
                    Rule::new("disposable_email", 0.3),
                    // The entity was blocked by an earlier score (`[block]`).
                    Rule::new("blocked_entity", 0.5),
                ],
            },
            RuleSet {
                name: "claim_rules".into(),
                rules: vec![
                    Rule::new("early_claim", 0.45),
                    Rule::new("amount_near_coverage_limit", 0.35),
                    Rule::new("many_prior_claims", 0.3),
                    Rule::new("amount_vs_type_avg", 0.25),
                    Rule::new("claim_cluster", 0.35),
                    Rule::new("late_report", 0.15),
                    Rule::new("no_police_report", 0.15),
                    Rule::new("no_witnesses_large_claim", 0.1),
                    // The entity was blocked by an earlier score (`[block]`).
                    Rule::new("blocked_entity", 0.5),
                ],
            },
            RuleSet {
                name: "telemetry_rules".into(),
                rules: vec![
                    Rule::new("reading_above_range", 0.5),
                    Rule::new("reading_below_range", 0.5),
                    Rule::new("reading_far_out_of_range", 0.6),
                    Rule::new("reading_spike", 0.35),
                    Rule::new("sensor_flatline", 0.4),
                    Rule::new("sensor_correlation_break", 0.3),
                    Rule::new("maintenance_overdue", 0.15),
                    Rule::new("low_battery", 0.1),
                    Rule::new("device_error", 0.3),
                    // The entity was blocked by an earlier score (`[block]`).
                    Rule::new("blocked_entity", 0.5),
                ],
            },
        ]
    }

    /// Checks the set before it becomes a SQL function: a name, at least one rule, weights in [0, 1].
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.name.is_empty() {
            return Err("a rule set needs a name".into());
        }
        if self.rules.is_empty() {
            return Err(format!("rule set `{}` has no rules", self.name));
        }
        for rule in &self.rules {
            if !(0.0..=1.0).contains(&rule.weight) {
                return Err(format!(
                    "rule `{}` of `{}` has weight {}, outside [0, 1]",
                    rule.code, self.name, rule.weight
                ));
            }
        }
        Ok(())
    }
}

/// The SQL function for a [`RuleSet`]: `name(flag_1, ..., flag_n)` returns
/// `STRUCT<score DOUBLE, reasons LIST<STRING>>`; a NULL flag counts as not fired.
#[derive(Debug)]
pub struct RuleSetUdf {
    set: RuleSet,
    signature: Signature,
}

impl RuleSetUdf {
    /// The function for `set`.
    pub fn new(set: RuleSet) -> Self {
        let signature = Signature::exact(
            vec![DataType::Boolean; set.rules.len()],
            Volatility::Immutable,
        );
        Self { set, signature }
    }

    fn output_fields() -> Fields {
        Fields::from(vec![
            Field::new("score", DataType::Float64, false),
            Field::new(
                "reasons",
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
                false,
            ),
        ])
    }
}

impl PartialEq for RuleSetUdf {
    fn eq(&self, other: &Self) -> bool {
        self.set == other.set
    }
}

impl Eq for RuleSetUdf {}

impl Hash for RuleSetUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.set.name.hash(state);
        for rule in &self.set.rules {
            rule.code.hash(state);
            rule.weight.to_bits().hash(state);
        }
    }
}

impl ScalarUDFImpl for RuleSetUdf {
    fn name(&self) -> &str {
        &self.set.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(Self::output_fields()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() != self.set.rules.len() {
            return exec_err!(
                "{} takes {} flags, got {}",
                self.set.name,
                self.set.rules.len(),
                args.args.len()
            );
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let flags: Vec<&BooleanArray> = arrays.iter().map(|a| a.as_boolean()).collect();
        let rows = args.number_rows;
        let mut scores = Float64Builder::with_capacity(rows);
        let mut reasons = ListBuilder::with_capacity(StringBuilder::new(), rows)
            .with_field(Arc::new(Field::new_list_field(DataType::Utf8, true)));
        for row in 0..rows {
            let mut keep = 1.0;
            for (rule, flag) in self.set.rules.iter().zip(&flags) {
                if flag.is_valid(row) && flag.value(row) {
                    keep *= 1.0 - rule.weight;
                    reasons.values().append_value(&rule.code);
                }
            }
            scores.append_value(1.0 - keep);
            reasons.append(true);
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(scores.finish()), Arc::new(reasons.finish())];
        let out = StructArray::try_new(Self::output_fields(), columns, None)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float64Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::FieldRef;
    use datafusion::config::ConfigOptions;

    fn invoke(set: RuleSet, flags: Vec<Vec<Option<bool>>>) -> StructArray {
        let rows = flags[0].len();
        let udf = RuleSetUdf::new(set);
        let args: Vec<ColumnarValue> = flags
            .into_iter()
            .map(|f| ColumnarValue::Array(Arc::new(BooleanArray::from(f))))
            .collect();
        let arg_fields: Vec<FieldRef> = args
            .iter()
            .map(|_| Arc::new(Field::new("f", DataType::Boolean, true)))
            .collect();
        let out = udf
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: rows,
                return_field: Arc::new(Field::new(
                    "r",
                    DataType::Struct(RuleSetUdf::output_fields()),
                    false,
                )),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap();
        match out {
            ColumnarValue::Array(a) => a.as_struct().clone(),
            ColumnarValue::Scalar(_) => unreachable!("rule sets return arrays"),
        }
    }

    #[test]
    fn noisy_or_of_fired_rules_with_reasons_in_rule_order() {
        let set = RuleSet {
            name: "t".into(),
            rules: vec![Rule::new("a", 0.5), Rule::new("b", 0.2)],
        };
        let out = invoke(
            set,
            vec![
                vec![Some(true), Some(false), None, Some(true)],
                vec![Some(true), Some(false), Some(true), None],
            ],
        );
        let scores = out
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        let expected = [1.0 - 0.5 * 0.8, 0.0, 0.2, 0.5];
        for (row, want) in expected.iter().enumerate() {
            assert!((scores.value(row) - want).abs() < 1e-12, "row {row}");
        }
        let reasons = out.column(1).as_any().downcast_ref::<ListArray>().unwrap();
        let codes = |row: usize| -> Vec<String> {
            let v = reasons.value(row);
            let s = v.as_any().downcast_ref::<StringArray>().unwrap();
            s.iter().map(|x| x.unwrap().to_string()).collect()
        };
        assert_eq!(codes(0), vec!["a", "b"]);
        assert!(codes(1).is_empty());
        assert_eq!(codes(2), vec!["b"]);
        assert_eq!(codes(3), vec!["a"]);
    }

    #[test]
    fn default_sets_are_valid_and_weights_out_of_range_are_named() {
        for set in RuleSet::defaults() {
            set.validate().unwrap();
        }
        let bad = RuleSet {
            name: "x".into(),
            rules: vec![Rule::new("too_much", 1.5)],
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("too_much") && err.contains("1.5"), "{err}");
    }
}
