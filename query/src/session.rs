//! A SQL session over the lake: every Delta table under the root as `riskstream.lake.<name>`,
//! Spark's functions and ours, Spark's and Delta's SQL where DataFusion's differs, read-only.
//! `riskstream sql` and the Flight SQL server both query through it, so they answer alike.

use std::sync::Arc;

use riskstream_lake::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use riskstream_lake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use riskstream_lake::datafusion::common::ScalarValue;
use riskstream_lake::datafusion::dataframe::DataFrame;
use riskstream_lake::datafusion::error::DataFusionError;
use riskstream_lake::datafusion::execution::context::SQLOptions;
use riskstream_lake::datafusion::logical_expr::LogicalPlan;
use riskstream_lake::datafusion::prelude::{SessionConfig, SessionContext};
use riskstream_lake::{Catalog, Commit, LakeLocation, LakeSchema, TableEntry};

use crate::dialect;
use crate::error::{QueryError, Result};

/// The catalog the lake's tables are in (`riskstream.lake.risk_scores`); SQL names them by table
/// name alone, as this is the default catalog.
pub const CATALOG: &str = "riskstream";
/// The schema the lake's tables are in.
pub const SCHEMA: &str = "lake";

/// How old the lake's listing may be when a statement plans: BI tools fire many small queries,
/// and on S3 each listing is a few LIST calls.
const LISTING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// A session over one lake.
pub struct LakeSession {
    ctx: SessionContext,
    schema: Arc<LakeSchema>,
}

impl LakeSession {
    /// A session over `lake`, its tables listed.
    pub async fn open(lake: LakeLocation) -> Result<Self> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_information_schema(true)
            .with_batch_size(8192);
        let mut ctx = SessionContext::new_with_config(config);
        riskstream_udfs::register_all(&mut ctx).map_err(|e| QueryError::Sql {
            message: format!("registering functions: {e}"),
        })?;
        let (schema, _) = LakeSchema::attach(Catalog::new(lake), &ctx).await?;
        Ok(Self { ctx, schema })
    }

    /// The DataFusion session.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The lake root.
    pub fn lake(&self) -> &LakeLocation {
        self.schema.catalog().lake()
    }

    /// Lists the lake again; the tables, sorted by name.
    pub async fn tables(&self) -> Result<Vec<TableEntry>> {
        Ok(self.schema.refresh().await?)
    }

    /// The columns of a table at its latest version.
    pub async fn table_schema(&self, name: &str) -> Result<SchemaRef> {
        use riskstream_lake::datafusion::catalog::SchemaProvider;
        let provider = self
            .schema
            .table(name)
            .await
            .map_err(QueryError::Execution)?
            .ok_or_else(|| self.schema.missing(name))?;
        Ok(provider.schema())
    }

    /// Plans one statement: `DESCRIBE HISTORY`, time travel and `?` parameters rewritten, Spark's
    /// window references resolved, anything that would write refused.
    pub async fn plan(&self, sql: &str) -> Result<LogicalPlan> {
        if let Some(history) = dialect::describe_history(sql)? {
            let commits = self.schema.history(&history.table, history.limit).await?;
            let frame = self.ctx.read_batch(history_batch(&commits)?)?;
            return Ok(frame.into_unoptimized_plan());
        }
        let rewritten = dialect::positional_parameters(&dialect::time_travel(sql)?);
        let rewritten = riskstream_udfs::spark_sql(&rewritten);
        // New tables show in SHOW TABLES and information_schema without a restart; a query
        // naming a table not listed yet finds it at once (the schema lists again on a miss).
        self.schema.refresh_if_older(LISTING_MAX_AGE).await?;
        let plan = self
            .ctx
            .state()
            .create_logical_plan(&rewritten)
            .await
            .map_err(|e| self.planning_error(e))?;
        read_only().verify_plan(&plan).map_err(|e| {
            let message = e.strip_backtrace();
            let message = message
                .strip_prefix("Error during planning: ")
                .unwrap_or(&message);
            QueryError::ReadOnly {
                what: match message.split_once(" not supported: ") {
                    Some((kind, name)) => format!("{kind} ({name})"),
                    None => message.to_string(),
                },
            }
        })?;
        Ok(plan)
    }

    /// Plans `sql` into a frame to collect or stream.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        Ok(self.frame(self.plan(sql).await?))
    }

    /// Plans `sql` with its positional parameters (`$1`, `?`) bound to `params` (none: left
    /// unbound, as a prepared statement's are until the client binds them).
    pub async fn plan_with_params(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<LogicalPlan> {
        let plan = self.plan(sql).await?;
        if params.is_empty() {
            return Ok(plan);
        }
        plan.with_param_values(params).map_err(|e| QueryError::Sql {
            message: format!("parameters: {}", e.strip_backtrace()),
        })
    }

    /// A frame to collect or stream `plan` with.
    pub fn frame(&self, plan: LogicalPlan) -> DataFrame {
        DataFrame::new(self.ctx.state(), plan)
    }

    fn planning_error(&self, e: DataFusionError) -> QueryError {
        let message = e.strip_backtrace();
        if message.contains("not found") {
            use riskstream_lake::datafusion::catalog::SchemaProvider;
            let names = self.schema.table_names();
            return QueryError::Sql {
                message: format!(
                    "{message}\n(tables under {}: {})",
                    self.lake(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            };
        }
        QueryError::Sql { message }
    }
}

/// What a served lake allows: queries only.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// `DESCRIBE HISTORY`'s columns, as Delta on Spark names them.
fn history_batch(commits: &[Commit]) -> Result<RecordBatch> {
    let text = |f: &dyn Fn(&Commit) -> Option<String>| -> ArrayRef {
        Arc::new(StringArray::from_iter(commits.iter().map(f)))
    };
    let info = |c: &Commit, key: &str| c.info.info.get(key).map(|v| v.to_string());
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("userId", DataType::Utf8, true),
        Field::new("userName", DataType::Utf8, true),
        Field::new("operation", DataType::Utf8, true),
        Field::new("operationParameters", DataType::Utf8, true),
        Field::new("readVersion", DataType::Int64, true),
        Field::new("isolationLevel", DataType::Utf8, true),
        Field::new("isBlindAppend", DataType::Boolean, true),
        Field::new("operationMetrics", DataType::Utf8, true),
        Field::new("userMetadata", DataType::Utf8, true),
        Field::new("engineInfo", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            commits.iter().map(|c| c.version),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(commits.iter().map(|c| c.timestamp_ms))
                .with_timezone("UTC"),
        ),
        text(&|c| c.info.user_id.clone()),
        text(&|c| c.info.user_name.clone()),
        text(&|c| c.info.operation.clone()),
        text(&|c| {
            c.info
                .operation_parameters
                .as_ref()
                .and_then(|p| serde_json::to_string(p).ok())
        }),
        Arc::new(Int64Array::from_iter(commits.iter().map(|c| {
            c.info.read_version.and_then(|v| i64::try_from(v).ok())
        }))),
        text(&|c| {
            c.info
                .isolation_level
                .as_ref()
                .and_then(|l| serde_json::to_value(l).ok())
                .and_then(|v| v.as_str().map(str::to_string))
        }),
        Arc::new(BooleanArray::from_iter(
            commits.iter().map(|c| c.info.is_blind_append),
        )),
        text(&|c| info(c, "operationMetrics")),
        text(&|c| c.info.user_metadata.clone()),
        text(&|c| c.info.engine_info.clone()),
    ];
    RecordBatch::try_new(schema, columns).map_err(|e| QueryError::Execution(e.into()))
}
