//! A scoring model as a SQL function: `name(feature_1, ..., feature_n)` returns
//! `STRUCT<score, gbdt, anomaly, top_features LIST<STRUCT<feature, contribution>>, model_version>`.
//! The model sits in a [`ModelSlot`], so a newer version can replace it while a job runs: the
//! next batch's plan checks its arguments against the new model.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{
    ArrayRef, Float64Array, ListArray, StringArray, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::ScoringModel;
use super::features::is_feature_type;

/// The model a scoring function evaluates now; replaced whole when a new version is promoted.
#[derive(Debug)]
pub struct ModelSlot {
    current: RwLock<Arc<ScoringModel>>,
}

impl ModelSlot {
    /// A slot holding `model`.
    pub fn new(model: ScoringModel) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Arc::new(model)),
        })
    }

    /// The model now in the slot.
    pub fn get(&self) -> Arc<ScoringModel> {
        // A panic elsewhere while holding the lock cannot leave a half-written Arc behind.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts `model` in the slot; batches planned from now on use it.
    pub fn replace(&self, model: ScoringModel) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(model);
    }
}

/// The SQL function of a [`ModelSlot`].
#[derive(Debug)]
pub struct ModelUdf {
    name: String,
    slot: Arc<ModelSlot>,
    explain_from: f64,
    signature: Signature,
}

impl ModelUdf {
    /// The function `name` over the model in `slot`; rows scoring at least `explain_from` get
    /// their top contributing features.
    pub fn new(name: impl Into<String>, slot: Arc<ModelSlot>, explain_from: f64) -> Self {
        Self {
            name: name.into(),
            slot,
            explain_from,
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }

    fn contribution_fields() -> Fields {
        Fields::from(vec![
            Field::new("feature", DataType::Utf8, false),
            Field::new("contribution", DataType::Float64, false),
        ])
    }

    /// The type the function returns.
    pub fn output_fields() -> Fields {
        Fields::from(vec![
            Field::new("score", DataType::Float64, false),
            Field::new("gbdt", DataType::Float64, true),
            Field::new("anomaly", DataType::Float64, true),
            Field::new(
                "top_features",
                DataType::List(Arc::new(Field::new_list_field(
                    DataType::Struct(Self::contribution_fields()),
                    true,
                ))),
                false,
            ),
            Field::new("model_version", DataType::Utf8, false),
        ])
    }
}

impl PartialEq for ModelUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && Arc::ptr_eq(&self.slot, &other.slot)
            && self.explain_from.to_bits() == other.explain_from.to_bits()
    }
}

impl Eq for ModelUdf {}

impl Hash for ModelUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        Arc::as_ptr(&self.slot).hash(state);
    }
}

impl ScalarUDFImpl for ModelUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(Self::output_fields()))
    }

    /// Checks the arguments against the model's features when the query is planned, so a wrong
    /// count, a text column or two features swapped fail before any row is scored.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let model = self.slot.get();
        let features = model.features();
        let order = || features.join(", ");
        if args.arg_fields.len() != features.len() {
            return plan_err!(
                "{} takes the {} features of model {} in this order: {}; got {} arguments",
                self.name,
                features.len(),
                model.version(),
                order(),
                args.arg_fields.len()
            );
        }
        for (i, (field, feature)) in args.arg_fields.iter().zip(features).enumerate() {
            if !is_feature_type(field.data_type()) {
                return plan_err!(
                    "{}: argument {} (feature `{feature}`) is {}; models read numbers and booleans",
                    self.name,
                    i + 1,
                    field.data_type()
                );
            }
            // A plain column named after another feature is almost surely a swap.
            if field.name() != feature && features.iter().any(|f| f == field.name()) {
                return plan_err!(
                    "{}: argument {} is `{}` but the model reads `{feature}` there; pass {}",
                    self.name,
                    i + 1,
                    field.name(),
                    order()
                );
            }
        }
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::Struct(Self::output_fields()),
            false,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let model = self.slot.get();
        if args.args.len() != model.features().len() {
            return exec_err!(
                "{} was planned for {} features, but model {} reads {}",
                self.name,
                args.args.len(),
                model.version(),
                model.features().len()
            );
        }
        let rows = args.number_rows;
        let columns = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let scores = model.score(&columns, self.explain_from)?;
        let optional = |v: Option<Vec<f64>>| -> ArrayRef {
            match v {
                Some(v) => Arc::new(Float64Array::from(v)),
                None => Arc::new(Float64Array::new_null(rows)),
            }
        };
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0i32);
        let mut names = StringBuilder::new();
        let mut contributions = Vec::new();
        for row in &scores.top_features {
            for &(feature, contribution) in row {
                names.append_value(&model.features()[feature]);
                contributions.push(f64::from(contribution));
            }
            offsets.push(contributions.len() as i32);
        }
        let entries = StructArray::try_new(
            Self::contribution_fields(),
            vec![
                Arc::new(names.finish()),
                Arc::new(Float64Array::from(contributions)),
            ],
            None,
        )?;
        let top = ListArray::try_new(
            Arc::new(Field::new_list_field(
                DataType::Struct(Self::contribution_fields()),
                true,
            )),
            OffsetBuffer::new(offsets.into()),
            Arc::new(entries),
            None,
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(scores.score)),
            optional(scores.gbdt),
            optional(scores.anomaly),
            Arc::new(top),
            Arc::new(StringArray::from(vec![model.version(); rows])),
        ];
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            Self::output_fields(),
            columns,
            None,
        )?)))
    }
}
