//! Severity tiers: `risk_severity(score)` maps a score in [0, 1] to `low`, `medium`, `high` or
//! `critical` at configurable cut points.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use serde::Deserialize;

/// Lower bounds of the tiers above `low`: a score at or above `critical` is critical, and so on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeverityTiers {
    /// Lowest score that is `medium`.
    pub medium: f64,
    /// Lowest score that is `high`; alerts start here.
    pub high: f64,
    /// Lowest score that is `critical`.
    pub critical: f64,
}

impl Default for SeverityTiers {
    fn default() -> Self {
        Self {
            medium: 0.3,
            high: 0.6,
            critical: 0.85,
        }
    }
}

impl SeverityTiers {
    /// The tier of one score; NaN (no evidence either way) is `low`.
    pub fn tier(&self, score: f64) -> &'static str {
        if score >= self.critical {
            "critical"
        } else if score >= self.high {
            "high"
        } else if score >= self.medium {
            "medium"
        } else {
            "low"
        }
    }

    /// Checks that the cut points rise strictly within (0, 1].
    pub fn validate(&self) -> std::result::Result<(), String> {
        let ok = 0.0 < self.medium
            && self.medium < self.high
            && self.high < self.critical
            && self.critical <= 1.0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "severity cut points must rise within (0, 1]: medium {} < high {} < critical {}",
                self.medium, self.high, self.critical
            ))
        }
    }
}

/// The SQL function `risk_severity(score DOUBLE) -> STRING`.
#[derive(Debug)]
pub struct SeverityUdf {
    tiers: SeverityTiers,
    signature: Signature,
}

impl SeverityUdf {
    /// The function for `tiers`.
    pub fn new(tiers: SeverityTiers) -> Self {
        Self {
            tiers,
            signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

impl PartialEq for SeverityUdf {
    fn eq(&self, other: &Self) -> bool {
        self.tiers == other.tiers
    }
}

impl Eq for SeverityUdf {}

impl Hash for SeverityUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for cut in [self.tiers.medium, self.tiers.high, self.tiers.critical] {
            cut.to_bits().hash(state);
        }
    }
}

impl ScalarUDFImpl for SeverityUdf {
    fn name(&self) -> &str {
        "risk_severity"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let scores = arrays[0].as_primitive::<Float64Type>();
        let mut out = StringBuilder::with_capacity(scores.len(), scores.len() * 6);
        for row in 0..scores.len() {
            if scores.is_null(row) {
                out.append_null();
            } else {
                out.append_value(self.tiers.tier(scores.value(row)));
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tiers_at_their_cut_points() {
        let t = SeverityTiers::default();
        assert_eq!(t.tier(0.0), "low");
        assert_eq!(t.tier(0.299), "low");
        assert_eq!(t.tier(0.3), "medium");
        assert_eq!(t.tier(0.6), "high");
        assert_eq!(t.tier(0.85), "critical");
        assert_eq!(t.tier(1.0), "critical");
        t.validate().unwrap();
        let bad = SeverityTiers {
            medium: 0.5,
            high: 0.4,
            critical: 0.9,
        };
        assert!(bad.validate().unwrap_err().contains("medium 0.5"));
    }
}
