//! `haversine_km(lat1, lon1, lat2, lon2)`: the great-circle distance in kilometres between two
//! points given in degrees, for travel features (distance and implied speed since a previous
//! event). SQL has no such function, and Spark users write it out by hand.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// Mean Earth radius, in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0;

/// The distance between two points, in kilometres.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

/// The SQL function; NULL when any coordinate is NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HaversineUdf {
    signature: Signature,
}

impl Default for HaversineUdf {
    fn default() -> Self {
        Self {
            // Integers and decimals coerce to doubles.
            signature: Signature::uniform(4, vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HaversineUdf {
    fn name(&self) -> &str {
        "haversine_km"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [lat1, lon1, lat2, lon2] =
            [0, 1, 2, 3].map(|i| arrays[i].as_primitive::<Float64Type>());
        let out: Float64Array = (0..lat1.len())
            .map(|r| {
                let any_null = [lat1, lon1, lat2, lon2].iter().any(|a| a.is_null(r));
                (!any_null).then(|| {
                    haversine_km(lat1.value(r), lon1.value(r), lat2.value(r), lon2.value(r))
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[test]
    fn london_to_new_york_is_about_5570_km() {
        let d = haversine_km(51.5074, -0.1278, 40.7128, -74.0060);
        assert!((d - 5570.0).abs() < 30.0, "{d}");
        assert_eq!(haversine_km(10.0, 20.0, 10.0, 20.0), 0.0);
    }

    #[tokio::test]
    async fn sql_gets_kilometres_and_null_for_a_missing_point() {
        let mut ctx = SessionContext::new();
        crate::register_all(&mut ctx).unwrap();
        let out = ctx
            .sql(
                "SELECT haversine_km(51.5074, -0.1278, 40.7128, -74.0060) AS d, \
                        haversine_km(1, 2, CAST(NULL AS DOUBLE), 4) AS n",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let d = out[0].column(0).as_primitive::<Float64Type>().value(0);
        assert!((d - 5570.0).abs() < 30.0, "{d}");
        assert!(out[0].column(1).is_null(0));
    }
}
