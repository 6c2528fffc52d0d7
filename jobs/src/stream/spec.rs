//! Job specs: the file `riskstream run JOB.toml` runs. A spec reads like Spark's
//! `readStream.format(..).option(..)` / `writeStream.format(..).trigger(..).option(..)` chain, with
//! Spark's option names, so a Structured Streaming user can write one without a manual.
//!
//! Every key is checked when the file is loaded: an unknown key or a bad value fails naming the
//! file and the key, before anything connects anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use riskstream_lake::Codec;
use riskstream_udfs::{RuleSet, SeverityTiers};
use serde::Deserialize;

use crate::error::{JobError, Result};
use crate::generator::Source;

/// A loaded, checked job spec.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The file it came from (named in every error about it).
    pub file: PathBuf,
    /// The job's name, shown in logs and progress reports.
    pub name: String,
    /// The Kafka source.
    pub source: KafkaSourceOptions,
    /// What to run over each micro-batch.
    pub query: QuerySpec,
    /// The Delta sink.
    pub sink: DeltaSinkOptions,
    /// The Kafka alert sink (`[alerts]`), if any.
    pub alerts: Option<AlertSinkOptions>,
    /// `[block]`: entities of selected output rows go on a blocklist table.
    pub block: Option<BlockSpec>,
    /// Models from the lake's registry served as SQL functions (`[[models]]`).
    pub models: Vec<ModelBinding>,
    /// The rule sets the SQL calls, with the spec's weights (`[rules.<set>]`) over the defaults.
    pub rule_sets: Vec<RuleSet>,
    /// Where `risk_severity` cuts its tiers (`[severity]`).
    pub severity: SeverityTiers,
    /// When micro-batches start.
    pub trigger: Trigger,
    /// Where the offset and commit logs live (`checkpointLocation`): a local folder or `s3://`.
    pub checkpoint_location: String,
}

/// Which topics to read.
#[derive(Debug, Clone)]
pub enum TopicSelection {
    /// `subscribe`: a comma-separated list of topics.
    Subscribe(Vec<String>),
    /// `subscribePattern`: every topic whose whole name matches the regex.
    Pattern(regex::Regex),
}

impl TopicSelection {
    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Subscribe(topics) => topics.iter().any(|t| t == topic),
            Self::Pattern(re) => re
                .find(topic)
                .is_some_and(|m| m.start() == 0 && m.end() == topic.len()),
        }
    }

    /// Spark's description of the subscription, as in progress reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Subscribe(topics) => format!("Subscribe[{}]", topics.join(",")),
            Self::Pattern(re) => format!("SubscribePattern[{}]", re.as_str()),
        }
    }
}

/// Where a query without a checkpoint starts (`startingOffsets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartingOffsets {
    /// The earliest offset of every partition.
    Earliest,
    /// The end of every partition when the query starts.
    Latest,
    /// Spark's per-partition JSON: `{"topic":{"0":23,"1":-2}}`, where -2 means earliest and -1
    /// latest. As in Spark, it must name every partition of the subscribed topics at start.
    Specific(BTreeMap<String, BTreeMap<i32, i64>>),
}

/// The Kafka source's options.
#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    /// `kafka.bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `subscribe` or `subscribePattern`.
    pub topics: TopicSelection,
    /// `startingOffsets` (default `latest`, as in Spark).
    pub starting_offsets: StartingOffsets,
    /// `maxOffsetsPerTrigger`: a cap on records per micro-batch, split across partitions in
    /// proportion to their backlog.
    pub max_offsets_per_trigger: Option<u64>,
    /// `failOnDataLoss` (default true): fail when offsets to read are gone (topic truncated or
    /// recreated); when false, warn, count the lost records and go on.
    pub fail_on_data_loss: bool,
    /// `kafkaConsumer.pollTimeoutMs`: how long a read may wait for records the broker said exist.
    pub poll_timeout: Duration,
    /// Every other `kafka.*` option, passed to the consumer without the prefix (as Spark does).
    pub kafka_options: Vec<(String, String)>,
}

/// What happens to a message that does not decode (`onError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Write it to the dead-letter table and go on (the default).
    DeadLetter,
    /// Stop the job before the batch commits.
    Fail,
}

/// `[block]`: the automated response. The entities of the output rows that match `where` are
/// appended to the Delta table at `path` (schema: `schemas::blocked_entities_schema`), exactly
/// once, in the batch's commit; a query reads it back through `[query] tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpec {
    /// A SQL predicate over the output's columns.
    pub filter: String,
    /// The table, a local folder or `s3://bucket/prefix/table`.
    pub path: String,
}

/// A Delta table the query reads under `name`, at its latest version when each batch starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTable {
    /// The name the SQL uses.
    pub name: String,
    /// The table, a local folder or `s3://bucket/prefix/table`.
    pub path: String,
}

/// The query run over each micro-batch.
#[derive(Debug, Clone)]
pub struct QuerySpec {
    /// The declared schema: the fast path decodes JSON values straight to its columns. `None`
    /// exposes Spark's raw Kafka columns instead.
    pub schema: Option<DeclaredSchema>,
    /// The view the batch's rows are visible under in the SQL.
    pub view: String,
    /// The SQL file and its text; `None` writes the rows as they are.
    pub sql: Option<SqlFile>,
    /// What to do with messages that do not decode.
    pub on_error: OnError,
    /// The event-time watermark (Spark's `withWatermark`), if any.
    pub watermark: Option<WatermarkSpec>,
    /// When rows computed over windows are emitted (`emit`).
    pub emit: Emit,
    /// `metadata = { topic = "source_topic", ... }`: Kafka record columns added to the declared
    /// schema's view, each under the name given, in the order of Spark's Kafka columns.
    pub metadata: Vec<MetadataColumn>,
    /// `tables`: Delta tables the SQL reads (a stream-static join), refreshed every batch.
    pub tables: Vec<QueryTable>,
}

/// A Kafka record column (Spark's name) the declared schema's view carries, and its name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataColumn {
    /// `topic`, `partition`, `offset`, `timestamp`, `timestampType` or `key`.
    pub kafka: String,
    /// The view's column.
    pub name: String,
}

impl QuerySpec {
    /// The schema of the rows the query reads: the declared schema and its metadata columns, or
    /// Spark's raw Kafka columns.
    pub fn input_schema(&self) -> SchemaRef {
        let Some(declared) = &self.schema else {
            return crate::schemas::kafka_records_schema();
        };
        let declared = declared.schema();
        if self.metadata.is_empty() {
            return declared;
        }
        let kafka = crate::schemas::kafka_records_schema();
        let mut fields: Vec<Field> = declared
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for m in &self.metadata {
            // Checked when the spec was read.
            if let Ok(field) = kafka.field_with_name(&m.kafka) {
                fields.push(field.clone().with_name(&m.name));
            }
        }
        Arc::new(Schema::new(fields))
    }
}

/// When a query with window functions emits an event's row (`emit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// Once the watermark has passed the event: its frames are final, and the row equals the
    /// same SQL run over the whole input (the default).
    #[default]
    OnWatermark,
    /// In the batch the event arrives in, over the events received by then: what a scoring job
    /// needs, as an event is scored when it happens. The watermark only bounds the kept history.
    OnArrival,
}

/// `watermark = { column, delay }`: the watermark is the latest event time seen minus `delay`;
/// rows at or before it are late.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// A timestamp column of the query's input view.
    pub column: String,
    /// How far behind the latest event time the watermark trails.
    pub delay: Duration,
}

/// A SQL file and its text.
#[derive(Debug, Clone)]
pub struct SqlFile {
    /// The path, as written in the spec.
    pub path: PathBuf,
    /// The text, inside the common table expressions of the query's `views`, if any.
    pub sql: String,
}

/// The schema of a job's JSON values (`query.schema`): one shipped with Riskstream, named, or the
/// user's own, written as Spark DDL (`'auction BIGINT, price BIGINT, at TIMESTAMP'`, as
/// `from_json` and `DataStreamReader.schema` take it).
#[derive(Debug, Clone, PartialEq)]
pub enum DeclaredSchema {
    /// A source's events.
    Events(Source),
    /// `fraud-labels` messages.
    Labels,
    /// A schema given in DDL; the spec names its view (`query.view`).
    Ddl(SchemaRef),
}

impl DeclaredSchema {
    /// The names a spec may use.
    pub const NAMES: [&'static str; 4] = ["transactions", "claims", "telemetry", "fraud_labels"];

    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "transactions" => Self::Events(Source::Transactions),
            "claims" => Self::Events(Source::Claims),
            "telemetry" => Self::Events(Source::Telemetry),
            "fraud_labels" => Self::Labels,
            _ => return None,
        })
    }

    /// A shipped schema's name, or a DDL schema whose every column the JSON decoder fills.
    fn parse(text: &str) -> std::result::Result<Self, String> {
        if let Some(named) = Self::named(text) {
            return Ok(named);
        }
        // A bare word names a shipped schema (Spark's DDL also takes `name:TYPE`).
        if text.trim().chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(format!(
                "`{text}` is not a declared schema (one of {}) nor a DDL schema such as \
                 'id STRING, at TIMESTAMP'",
                Self::NAMES.join(", ")
            ));
        }
        let fields = riskstream_udfs::parse_ddl_schema(text)?;
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name() == f.name()) {
                return Err(format!("column `{}` is declared twice", f.name()));
            }
        }
        if let Some(f) = fields
            .iter()
            .find(|f| !crate::decode::decodes(f.data_type()))
        {
            return Err(format!(
                "column `{}`: {} is not a type the JSON decoder fills (STRING, DOUBLE, BIGINT, \
                 INT, BOOLEAN, DATE, TIMESTAMP)",
                f.name(),
                f.data_type()
            ));
        }
        Ok(Self::Ddl(Arc::new(Schema::new(fields))))
    }

    /// The arrow schema.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Self::Events(source) => crate::schemas::source_schema(*source),
            Self::Labels => crate::schemas::labels_schema(),
            Self::Ddl(schema) => Arc::clone(schema),
        }
    }

    /// The name a shipped schema is used by in specs, which is also its view's default name;
    /// `None` for a DDL schema.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            Self::Events(Source::Transactions) => "transactions",
            Self::Events(Source::Claims) => "claims",
            Self::Events(Source::Telemetry) => "telemetry",
            Self::Labels => "fraud_labels",
            Self::Ddl(_) => return None,
        })
    }
}

/// The Delta sink's options.
#[derive(Debug, Clone)]
pub struct DeltaSinkOptions {
    /// `path`: the table's location, a local folder or `s3://bucket/prefix/table`.
    pub path: String,
    /// `deadLetterPath`: where messages that do not decode go (default: `dead_letters` next to
    /// `path`).
    pub dead_letter_path: String,
    /// `lateEventsPath`: where rows behind the watermark go (default: `late_events` next to
    /// `path`); used only with a watermark.
    pub late_events_path: String,
    /// `partitionBy`.
    pub partition_by: Vec<String>,
    /// `mergeSchema`: let new nullable columns in the query's output widen the table's schema.
    pub merge_schema: bool,
    /// `checkpointInterval`: write a Delta checkpoint every N commits (Delta's
    /// `delta.checkpointInterval`, set when the table is created).
    pub checkpoint_interval: u64,
    /// `compression`: the Parquet codec of the files the job's tables are written in (Spark's
    /// Parquet option and names; zstd by default, where Spark's is snappy: see `Codec`).
    pub compression: Codec,
    /// `batchIdColumn`: a column added to every row holding its micro-batch id.
    pub batch_id_column: Option<String>,
    /// `processingTimeColumn`: a column added to every row holding the batch's processing time.
    pub processing_time_column: Option<String>,
    /// `outputMode`: which rows of a streaming aggregation each batch writes.
    pub output_mode: OutputMode,
}

/// Spark's output modes: which rows of a streaming aggregation (GROUP BY over the stream) each
/// micro-batch writes. A query without one appends its rows whatever the mode says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Each group once, final: a window when the watermark passes its end.
    #[default]
    Append,
    /// The groups this batch changed, appended again each time they change.
    Update,
    /// Every group, replacing the table's rows each batch.
    Complete,
}

impl OutputMode {
    /// The mode as `outputMode` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Update => "update",
            Self::Complete => "complete",
        }
    }
}

/// The Kafka alert sink's options (`[alerts]`): the output rows matching `where`, as JSON
/// messages on a topic.
#[derive(Debug, Clone)]
pub struct AlertSinkOptions {
    /// `where`: a SQL predicate over the sink's columns, such as
    /// `severity IN ('high', 'critical')`.
    pub filter: String,
    /// Where the alerts are published (`format = "kafka"`); `None` for `format = "delta"`,
    /// which only writes the table.
    pub kafka: Option<KafkaAlertOptions>,
    /// `path`: a Delta table that also receives the alerts, exactly once (the topic gets them at
    /// least once). Required without Kafka.
    pub table_path: Option<String>,
}

/// The Kafka side of an alert sink.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaAlertOptions {
    /// `kafka.bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `topic`.
    pub topic: String,
    /// `keyColumn`: the column whose value (as text) keys each message; none gives null keys.
    pub key_column: Option<String>,
    /// Every other `kafka.*` option, passed to the producer without the prefix.
    pub kafka_options: Vec<(String, String)>,
    /// `kafka.message.timeout.ms` (or its other name `kafka.delivery.timeout.ms`): how long the
    /// producer tries to deliver an alert, 30 s unless set; zero means for ever.
    pub message_timeout: Duration,
}

/// A registered model served to the job's SQL (`[[models]]`): the champion version as
/// `function(...)`, and with `shadow` the challenger as `function_challenger(...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelBinding {
    /// The SQL function's name.
    pub function: String,
    /// The lake whose `models/` holds the model.
    pub lake: String,
    /// The model's name in the registry.
    pub name: String,
    /// How often to look for a newly promoted version.
    pub refresh: Duration,
    /// Also serve the challenger (the champion when none is promoted) in shadow.
    pub shadow: bool,
    /// Rows scoring at least this get their top contributing features.
    pub explain_from: f64,
    /// A model folder served while the registry has no champion (`default`), such as the one
    /// shipped with Riskstream.
    pub default: Option<PathBuf>,
    /// The key naming this binding in errors (`models[0]`).
    pub key: String,
}

/// When micro-batches run (`trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// No trigger: the next batch starts as soon as the last one ends (and data is there).
    Continuous,
    /// `processingTime`: a batch every interval; one that overruns is followed at once.
    ProcessingTime(Duration),
    /// `availableNow`: everything up to the offsets seen at start, in bounded batches, then stop.
    AvailableNow,
    /// `once`: everything up to the offsets seen at start in one batch, then stop.
    Once,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    name: String,
    read_stream: RawReadStream,
    #[serde(default)]
    query: RawQuery,
    write_stream: RawWriteStream,
    alerts: Option<RawAlerts>,
    block: Option<RawBlock>,
    #[serde(default)]
    models: Vec<RawModel>,
    /// `[rules.<set>]`: rule code -> weight, overriding the set's defaults.
    #[serde(default)]
    rules: BTreeMap<String, BTreeMap<String, f64>>,
    severity: Option<SeverityTiers>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawModel {
    function: String,
    lake: String,
    name: String,
    refresh: Option<String>,
    #[serde(default)]
    shadow: bool,
    explain_from: Option<f64>,
    default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    format: String,
    #[serde(rename = "where")]
    filter: String,
    #[serde(default)]
    options: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReadStream {
    format: String,
    #[serde(default)]
    options: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawQuery {
    schema: Option<String>,
    view: Option<String>,
    file: Option<PathBuf>,
    on_error: Option<String>,
    watermark: Option<RawWatermark>,
    emit: Option<String>,
    #[serde(default)]
    views: Vec<RawView>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    tables: Vec<RawTable>,
}

/// `[block]`: the automated response, entities of the selected output rows put on a table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    #[serde(rename = "where")]
    filter: String,
    path: String,
}

/// `tables = [{ name, path }]`: a Delta table the job's SQL reads, as of each batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    path: String,
}

/// `views = [{ name, file }]`: a SQL file whose query the job's SQL reads as a view.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    name: String,
    file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatermark {
    column: String,
    delay: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWriteStream {
    format: String,
    output_mode: Option<String>,
    trigger: Option<BTreeMap<String, toml::Value>>,
    #[serde(default)]
    partition_by: Vec<String>,
    #[serde(default)]
    options: BTreeMap<String, toml::Value>,
}

/// Options taken from a `BTreeMap`, each once; what is left at the end is unknown.
struct Options<'a> {
    file: &'a Path,
    section: &'static str,
    map: BTreeMap<String, toml::Value>,
}

impl Options<'_> {
    fn key(&self, key: &str) -> String {
        format!("{}: {}.{key}", self.file.display(), self.section)
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> JobError {
        JobError::config(self.key(key), reason)
    }

    /// A string option; Spark's options are strings, so numbers and booleans are taken as their
    /// text too.
    fn string(&mut self, key: &str) -> Result<Option<String>> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => expand_env(&s, |name| std::env::var(name).ok())
                .map(Some)
                .map_err(|reason| self.bad(key, reason)),
            Some(toml::Value::Integer(i)) => Ok(Some(i.to_string())),
            Some(toml::Value::Boolean(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(self.bad(
                key,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    fn required(&mut self, key: &str) -> Result<String> {
        self.string(key)?
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| self.bad(key, "is required"))
    }

    fn bool(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.string(key)? {
            None => Ok(default),
            Some(s) => match s.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(self.bad(key, format!("`{s}` is not true or false"))),
            },
        }
    }

    fn positive(&mut self, key: &str) -> Result<Option<u64>> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => match s.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(self.bad(key, format!("`{s}` is not a positive whole number"))),
            },
        }
    }

    /// Takes every `kafka.*` option left, without the prefix, for the client; one the engine
    /// sets itself (`engine_owned`, without the prefix) fails, saying `why`.
    fn kafka_passthrough(
        &mut self,
        engine_owned: &[&str],
        why: &str,
    ) -> Result<Vec<(String, String)>> {
        let keys: Vec<String> = self
            .map
            .keys()
            .filter(|k| k.starts_with("kafka."))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for key in keys {
            let name = &key["kafka.".len()..];
            if engine_owned.contains(&name) {
                return Err(self.bad(&key, format!("is set by the engine: {why}")));
            }
            let value = self.required(&key)?;
            out.push((name.to_string(), value));
        }
        Ok(out)
    }

    /// Fails naming the first key that is neither in `known` nor starts with `prefix`, before
    /// any value is looked at, so a misspelt key is named as such rather than as a missing one.
    fn check_known(&self, known: &[&str], prefix: Option<&str>) -> Result<()> {
        let unknown = self
            .map
            .keys()
            .find(|k| !known.contains(&k.as_str()) && prefix.is_none_or(|p| !k.starts_with(p)));
        match unknown {
            None => Ok(()),
            Some(key) => {
                Err(self.bad(key, format!("unknown option (known: {})", known.join(", "))))
            }
        }
    }
}

/// Expands `${NAME}` and `${NAME:-default}` in an option's value from the environment, so that
/// one spec serves a laptop, CI and the compose stack. A variable that is unset and has no default
/// is an error.
pub fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(close) = after.find('}') else {
            return Err(format!("`{text}` has an unclosed ${{"));
        };
        let inner = &after[..close];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "the environment variable {name} is not set (write ${{{name}:-default}} for a default)"
                ));
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a Spark interval such as `5 seconds`, `interval 1 minute` or `500ms`.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_prefix("interval").map(str::trim).unwrap_or(&t);
    humantime::parse_duration(t).ok()
}

/// Parses Spark's per-partition offsets JSON: `{"topic":{"0":23,"1":-2}}`.
pub fn parse_partition_offsets(
    json: &str,
) -> std::result::Result<BTreeMap<String, BTreeMap<i32, i64>>, String> {
    let raw: BTreeMap<String, BTreeMap<String, i64>> =
        serde_json::from_str(json).map_err(|e| format!("not Spark's offsets JSON: {e}"))?;
    let mut out = BTreeMap::new();
    for (topic, partitions) in raw {
        let mut parsed = BTreeMap::new();
        for (p, offset) in partitions {
            let partition: i32 = p
                .parse()
                .map_err(|_| format!("topic `{topic}`: `{p}` is not a partition number"))?;
            if offset < -2 {
                return Err(format!(
                    "topic `{topic}` partition {partition}: offset {offset} (use -2 for earliest, -1 for latest)"
                ));
            }
            parsed.insert(partition, offset);
        }
        out.insert(topic, parsed);
    }
    Ok(out)
}

impl JobSpec {
    /// Loads and checks the spec in `file`, reading its SQL file.
    pub fn load(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).map_err(|source| JobError::Io {
            path: file.display().to_string(),
            source,
        })?;
        Self::parse(file, &text)
    }

    /// Checks the spec text `text`, which came from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Self> {
        let raw: RawSpec = toml::from_str(text)
            .map_err(|e| JobError::config(file.display().to_string(), e.to_string()))?;
        let at = |key: &str| format!("{}: {key}", file.display());
        if raw.name.trim().is_empty() {
            return Err(JobError::config(at("name"), "is empty"));
        }

        if raw.read_stream.format != "kafka" {
            return Err(JobError::config(
                at("readStream.format"),
                format!(
                    "`{}` is not a supported source (use \"kafka\")",
                    raw.read_stream.format
                ),
            ));
        }
        let mut read = Options {
            file,
            section: "readStream.options",
            map: raw.read_stream.options,
        };
        read.check_known(
            &[
                "subscribe",
                "subscribePattern",
                "startingOffsets",
                "maxOffsetsPerTrigger",
                "failOnDataLoss",
                "kafkaConsumer.pollTimeoutMs",
                "assign",
                "endingOffsets",
            ],
            Some("kafka."),
        )?;
        let source = kafka_options(&mut read)?;

        let query = query_spec(file, raw.query)?;

        if raw.write_stream.format != "delta" {
            return Err(JobError::config(
                at("writeStream.format"),
                format!(
                    "`{}` is not a supported sink (use \"delta\")",
                    raw.write_stream.format
                ),
            ));
        }
        // Whether the query has the aggregation update and complete need is known once its SQL
        // is planned (the runner checks).
        let output_mode = match raw.write_stream.output_mode.as_deref() {
            None | Some("append") => OutputMode::Append,
            Some("update") => OutputMode::Update,
            Some("complete") => OutputMode::Complete,
            Some(other) => {
                return Err(JobError::config(
                    at("writeStream.outputMode"),
                    format!("`{other}` is not append, update or complete"),
                ));
            }
        };
        let trigger = trigger(file, raw.write_stream.trigger)?;
        let mut write = Options {
            file,
            section: "writeStream.options",
            map: raw.write_stream.options,
        };
        write.check_known(
            &[
                "path",
                "checkpointLocation",
                "deadLetterPath",
                "lateEventsPath",
                "mergeSchema",
                "checkpointInterval",
                "compression",
                "batchIdColumn",
                "processingTimeColumn",
            ],
            None,
        )?;
        let path = write.required("path")?;
        let checkpoint_location = write.required("checkpointLocation")?;
        let dead_letter_path = match write.string("deadLetterPath")? {
            Some(p) => p,
            None => sibling(&path, "dead_letters"),
        };
        let late_events_path = match write.string("lateEventsPath")? {
            Some(p) => p,
            None => sibling(&path, "late_events"),
        };
        let merge_schema = write.bool("mergeSchema", false)?;
        let checkpoint_interval = write.positive("checkpointInterval")?.unwrap_or(100);
        let compression = match write.string("compression")? {
            None => Codec::default(),
            Some(name) => name
                .parse()
                .map_err(|reason| write.bad("compression", reason))?,
        };
        let batch_id_column = write.string("batchIdColumn")?;
        let processing_time_column = write.string("processingTimeColumn")?;
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        if same(&dead_letter_path, &path) {
            return Err(JobError::config(
                at("writeStream.options.deadLetterPath"),
                "must differ from path",
            ));
        }
        if same(&late_events_path, &path) || same(&late_events_path, &dead_letter_path) {
            return Err(JobError::config(
                at("writeStream.options.lateEventsPath"),
                "must differ from path and deadLetterPath",
            ));
        }
        let partition_by = raw.write_stream.partition_by;
        if let Some(empty) = partition_by.iter().find(|c| c.trim().is_empty()) {
            return Err(JobError::config(
                at("writeStream.partitionBy"),
                format!("`{empty}` is not a column name"),
            ));
        }

        let alerts = raw.alerts.map(|a| alert_options(file, a)).transpose()?;
        let block = raw.block.map(|b| block_spec(file, b)).transpose()?;
        let models = raw
            .models
            .into_iter()
            .enumerate()
            .map(|(i, m)| model_binding(file, i, m))
            .collect::<Result<Vec<_>>>()?;
        for (i, m) in models.iter().enumerate() {
            if models[..i].iter().any(|o| o.function == m.function) {
                return Err(JobError::config(
                    at(&format!("{}.function", m.key)),
                    format!("`{}` is served twice", m.function),
                ));
            }
        }

        let rule_sets = rule_sets(file, raw.rules)?;
        let severity = raw.severity.unwrap_or_default();
        severity
            .validate()
            .map_err(|e| JobError::config(format!("{}: severity", file.display()), e))?;
        Ok(Self {
            file: file.to_path_buf(),
            name: raw.name,
            source,
            query,
            alerts,
            block,
            models,
            rule_sets,
            severity,
            sink: DeltaSinkOptions {
                path,
                dead_letter_path,
                late_events_path,
                partition_by,
                merge_schema,
                checkpoint_interval,
                compression,
                batch_id_column,
                processing_time_column,
                output_mode,
            },
            trigger,
            checkpoint_location,
        })
    }

    /// The key `key` of this spec, as errors name it.
    pub fn key(&self, key: &str) -> String {
        format!("{}: {key}", self.file.display())
    }

    /// The same job with its tables (keeping their folder names) and its models' registry in
    /// `lake`, and its checkpoint in `checkpoints/<name>`: how the demo and the benchmarks run a
    /// shipped job in a lake of their own.
    pub fn relocate(&mut self, lake: &str, checkpoints: &str) {
        let lake = lake.trim_end_matches('/');
        let moved = |path: &str| {
            let table = path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(path);
            format!("{lake}/{table}")
        };
        self.sink.path = moved(&self.sink.path);
        self.sink.dead_letter_path = moved(&self.sink.dead_letter_path);
        self.sink.late_events_path = moved(&self.sink.late_events_path);
        if let Some(alerts) = &mut self.alerts {
            alerts.table_path = alerts.table_path.as_deref().map(moved);
        }
        if let Some(block) = &mut self.block {
            block.path = moved(&block.path);
        }
        for table in &mut self.query.tables {
            table.path = moved(&table.path);
        }
        for model in &mut self.models {
            model.lake = lake.to_string();
        }
        self.checkpoint_location = format!("{}/{}", checkpoints.trim_end_matches('/'), self.name);
    }
}

/// The default rule sets with the weights `[rules.<set>]` gives: a set or rule code that does not
/// exist, or a weight outside [0, 1], is an error naming its key. The rules themselves (and their
/// order, the SQL function's arguments) go with the SQL that computes them.
fn rule_sets(
    file: &Path,
    weights: BTreeMap<String, BTreeMap<String, f64>>,
) -> Result<Vec<RuleSet>> {
    let mut sets = RuleSet::defaults();
    let names: Vec<String> = sets.iter().map(|s| s.name.clone()).collect();
    for (set_name, rules) in weights {
        let at = |key: String| format!("{}: rules.{key}", file.display());
        let Some(set) = sets.iter_mut().find(|s| s.name == set_name) else {
            return Err(JobError::config(
                at(set_name.clone()),
                format!("no such rule set (there are {})", names.join(", ")),
            ));
        };
        for (code, weight) in rules {
            let codes: Vec<&str> = set.rules.iter().map(|r| r.code.as_str()).collect();
            let known = codes.join(", ");
            let Some(rule) = set.rules.iter_mut().find(|r| r.code == code) else {
                return Err(JobError::config(
                    at(format!("{set_name}.{code}")),
                    format!("no such rule in {set_name} (its rules: {known})"),
                ));
            };
            if !(0.0..=1.0).contains(&weight) {
                return Err(JobError::config(
                    at(format!("{set_name}.{code}")),
                    format!("weight {weight} is outside [0, 1]"),
                ));
            }
            rule.weight = weight;
        }
    }
    Ok(sets)
}

/// Checks one `[[models]]` entry.
fn model_binding(file: &Path, index: usize, raw: RawModel) -> Result<ModelBinding> {
    let key = format!("models[{index}]");
    let at = |field: &str| format!("{}: {key}.{field}", file.display());
    let identifier = !raw.function.is_empty()
        && raw
            .function
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !raw.function.starts_with(|c: char| c.is_ascii_digit());
    if !identifier {
        return Err(JobError::config(
            at("function"),
            format!(
                "`{}` is not a SQL function name (letters, digits, `_`)",
                raw.function
            ),
        ));
    }
    let expand = |field: &str, value: &str| {
        expand_env(value, |name| std::env::var(name).ok())
            .map_err(|e| JobError::config(at(field), e))
    };
    let (lake, name) = (expand("lake", &raw.lake)?, expand("name", &raw.name)?);
    for (field, value) in [("lake", &lake), ("name", &name)] {
        if value.trim().is_empty() {
            return Err(JobError::config(at(field), "is empty"));
        }
    }
    let refresh = match raw.refresh.as_deref() {
        None => Duration::from_secs(30),
        Some(text) => parse_interval(text)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                JobError::config(
                    at("refresh"),
                    format!("`{text}` is not an interval such as \"30 seconds\""),
                )
            })?,
    };
    let explain_from = raw.explain_from.unwrap_or(0.3);
    if !(0.0..=1.0).contains(&explain_from) {
        return Err(JobError::config(
            at("explainFrom"),
            format!("{explain_from} is outside [0, 1]"),
        ));
    }
    let default = match raw.default {
        None => None,
        Some(text) => {
            let dir = PathBuf::from(expand("default", &text)?);
            if !dir.join(riskstream_udfs::model::MANIFEST_FILE).is_file() {
                return Err(JobError::config(
                    at("default"),
                    format!(
                        "{} is not a model folder (no {})",
                        dir.display(),
                        riskstream_udfs::model::MANIFEST_FILE
                    ),
                ));
            }
            Some(dir)
        }
    };
    Ok(ModelBinding {
        function: raw.function,
        lake,
        name,
        refresh,
        shadow: raw.shadow,
        explain_from,
        default,
        key,
    })
}

/// `dir/name` next to the last segment of `path`.
fn sibling(path: &str, name: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/{name}"),
        None => name.to_string(),
    }
}

fn kafka_options(read: &mut Options<'_>) -> Result<KafkaSourceOptions> {
    let bootstrap_servers = read.required("kafka.bootstrap.servers")?;
    let bootstrap_servers =
        crate::kafka::parse_bootstrap(&bootstrap_servers, &read.key("kafka.bootstrap.servers"))?;
    let topics = match (read.string("subscribe")?, read.string("subscribePattern")?) {
        (Some(list), None) => {
            let topics: Vec<String> = list
                .split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect();
            if topics.is_empty() {
                return Err(read.bad("subscribe", "names no topic"));
            }
            TopicSelection::Subscribe(topics)
        }
        (None, Some(pattern)) => TopicSelection::Pattern(
            regex::Regex::new(&pattern).map_err(|e| read.bad("subscribePattern", e.to_string()))?,
        ),
        (Some(_), Some(_)) => {
            return Err(read.bad(
                "subscribePattern",
                "give either subscribe or subscribePattern, not both",
            ));
        }
        (None, None) => return Err(read.bad("subscribe", "is required (or subscribePattern)")),
    };
    for unsupported in ["assign", "endingOffsets"] {
        if read.map.contains_key(unsupported) {
            return Err(read.bad(
                unsupported,
                "is not supported by streaming jobs (use subscribe)",
            ));
        }
    }
    let starting_offsets = match read.string("startingOffsets")? {
        None => StartingOffsets::Latest,
        Some(s) => match s.trim() {
            "earliest" => StartingOffsets::Earliest,
            "latest" => StartingOffsets::Latest,
            json if json.starts_with('{') => StartingOffsets::Specific(
                parse_partition_offsets(json).map_err(|e| read.bad("startingOffsets", e))?,
            ),
            other => {
                return Err(read.bad(
                    "startingOffsets",
                    format!("`{other}` is not earliest, latest or Spark's per-partition JSON"),
                ));
            }
        },
    };
    if let StartingOffsets::Specific(map) = &starting_offsets {
        for topic in map.keys() {
            if !topics.matches(topic) {
                return Err(read.bad(
                    "startingOffsets",
                    format!("topic `{topic}` is not subscribed"),
                ));
            }
        }
    }
    let max_offsets_per_trigger = read.positive("maxOffsetsPerTrigger")?;
    let fail_on_data_loss = read.bool("failOnDataLoss", true)?;
    let poll_timeout = Duration::from_millis(
        read.positive("kafkaConsumer.pollTimeoutMs")?
            .unwrap_or(120_000),
    );
    // Spark passes every `kafka.`-prefixed option to the consumer; so do we, except the ones the
    // engine owns.
    let kafka_options = read.kafka_passthrough(
        &[
            "enable.auto.commit",
            "auto.offset.reset",
            "group.id",
            "enable.partition.eof",
        ],
        "offsets are owned by the checkpoint",
    )?;
    Ok(KafkaSourceOptions {
        bootstrap_servers,
        topics,
        starting_offsets,
        max_offsets_per_trigger,
        fail_on_data_loss,
        poll_timeout,
        kafka_options,
    })
}

fn alert_options(file: &Path, raw: RawAlerts) -> Result<AlertSinkOptions> {
    if raw.format != "kafka" && raw.format != "delta" {
        return Err(JobError::config(
            format!("{}: alerts.format", file.display()),
            format!(
                "`{}` is not a supported alert sink (\"kafka\", or \"delta\" for the table alone)",
                raw.format
            ),
        ));
    }
    if raw.filter.trim().is_empty() {
        return Err(JobError::config(
            format!("{}: alerts.where", file.display()),
            "is empty (a SQL predicate such as severity IN ('high', 'critical'))",
        ));
    }
    let mut options = Options {
        file,
        section: "alerts.options",
        map: raw.options,
    };
    if raw.format == "delta" {
        options.check_known(&["path"], None)?;
        let table_path = Some(options.required("path")?);
        return Ok(AlertSinkOptions {
            filter: raw.filter,
            kafka: None,
            table_path,
        });
    }
    options.check_known(&["topic", "keyColumn", "path"], Some("kafka."))?;
    let bootstrap_servers = options.required("kafka.bootstrap.servers")?;
    let bootstrap_servers =
        crate::kafka::parse_bootstrap(&bootstrap_servers, &options.key("kafka.bootstrap.servers"))?;
    let topic = options.required("topic")?;
    let key_column = options.string("keyColumn")?;
    let table_path = options.string("path")?;
    // The delivery guarantee rests on the producer's settings.
    let kafka_options = options.kafka_passthrough(
        &[
            "enable.idempotence",
            "acks",
            "transactional.id",
            "max.in.flight.requests.per.connection",
        ],
        "alerts use an idempotent producer",
    )?;
    let mut message_timeout = Duration::from_secs(30);
    let mut kept = Vec::with_capacity(kafka_options.len());
    for (name, value) in kafka_options {
        if name == "message.timeout.ms" || name == "delivery.timeout.ms" {
            let ms: u64 = value.trim().parse().map_err(|_| {
                JobError::config(
                    options.key(&format!("kafka.{name}")),
                    format!("`{value}` is not a whole number of milliseconds"),
                )
            })?;
            message_timeout = Duration::from_millis(ms);
        } else {
            kept.push((name, value));
        }
    }
    Ok(AlertSinkOptions {
        filter: raw.filter,
        kafka: Some(KafkaAlertOptions {
            bootstrap_servers,
            topic,
            key_column,
            kafka_options: kept,
            message_timeout,
        }),
        table_path,
    })
}

/// A name SQL takes without quotes.
fn is_sql_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `sql` with each named view's SQL visible to it, as common table expressions around it. Both
/// may have WITH clauses of their own: SQL nests them.
fn with_views(views: &[(&str, String)], sql: &str) -> String {
    if views.is_empty() {
        return sql.to_string();
    }
    let body = |text: &str| text.trim_end().trim_end_matches(';').to_string();
    let ctes: Vec<String> = views
        .iter()
        .map(|(name, text)| format!("{name} AS (\n{}\n)", body(text)))
        .collect();
    format!(
        "WITH {}\nSELECT * FROM (\n{}\n)",
        ctes.join(",\n"),
        body(sql)
    )
}

fn query_spec(file: &Path, raw: RawQuery) -> Result<QuerySpec> {
    let at = |key: &str| format!("{}: query.{key}", file.display());
    let schema = match raw.schema {
        None => None,
        Some(text) => {
            Some(DeclaredSchema::parse(&text).map_err(|e| JobError::config(at("schema"), e))?)
        }
    };
    let view = match (raw.view, &schema) {
        (Some(view), _) => view,
        (None, None) => "kafka".to_string(),
        (None, Some(s)) => s.name().map(str::to_string).ok_or_else(|| {
            JobError::config(
                at("view"),
                "is needed with a DDL schema: the name the SQL reads the rows by",
            )
        })?,
    };
    if !is_sql_name(&view) {
        return Err(JobError::config(
            at("view"),
            format!("`{view}` is not a plain SQL name"),
        ));
    }
    let read = |path: &Path, key: &str| -> Result<(PathBuf, String)> {
        let path = PathBuf::from(
            expand_env(&path.to_string_lossy(), |name| std::env::var(name).ok())
                .map_err(|e| JobError::config(at(key), e))?,
        );
        let sql = std::fs::read_to_string(&path).map_err(|e| {
            JobError::config(at(key), format!("cannot read {}: {e}", path.display()))
        })?;
        Ok((path, sql))
    };
    let sql = match raw.file {
        None if !raw.views.is_empty() => {
            return Err(JobError::config(
                at("views"),
                "views are for the query in `file`, and there is none",
            ));
        }
        None => None,
        Some(path) => {
            let (path, sql) = read(&path, "file")?;
            let mut views = Vec::new();
            for (i, v) in raw.views.iter().enumerate() {
                let key = format!("views[{i}]");
                if !is_sql_name(&v.name) || v.name == view {
                    return Err(JobError::config(
                        at(&format!("{key}.name")),
                        format!("`{}` is not a plain SQL name other than `{view}`", v.name),
                    ));
                }
                let (_, text) = read(&v.file, &format!("{key}.file"))?;
                views.push((v.name.as_str(), text));
            }
            Some(SqlFile {
                path,
                sql: with_views(&views, &sql),
            })
        }
    };
    let on_error = match raw.on_error.as_deref() {
        None | Some("deadLetter") => OnError::DeadLetter,
        Some("fail") => OnError::Fail,
        Some(other) => {
            return Err(JobError::config(
                at("onError"),
                format!("`{other}` is not deadLetter or fail"),
            ));
        }
    };
    let watermark = match raw.watermark {
        None => None,
        Some(w) => {
            if w.column.trim().is_empty() {
                return Err(JobError::config(
                    at("watermark.column"),
                    "is empty (a timestamp column such as event_time)",
                ));
            }
            let delay = parse_interval(&w.delay).ok_or_else(|| {
                JobError::config(
                    at("watermark.delay"),
                    format!("`{}` is not a duration such as \"10 minutes\"", w.delay),
                )
            })?;
            Some(WatermarkSpec {
                column: w.column,
                delay,
            })
        }
    };
    let emit = match raw.emit.as_deref() {
        None | Some("onWatermark") => Emit::OnWatermark,
        Some("onArrival") if watermark.is_none() => {
            return Err(JobError::config(
                at("emit"),
                "`onArrival` needs a watermark (query.watermark), which bounds the history kept",
            ));
        }
        Some("onArrival") => Emit::OnArrival,
        Some(other) => {
            return Err(JobError::config(
                at("emit"),
                format!("`{other}` is not onWatermark or onArrival"),
            ));
        }
    };
    let metadata = metadata_columns(&raw.metadata, schema.as_ref(), &at)?;
    let mut tables: Vec<QueryTable> = Vec::new();
    for (i, t) in raw.tables.into_iter().enumerate() {
        let key = format!("tables[{i}]");
        let taken = t.name == view
            || raw.views.iter().any(|v| v.name == t.name)
            || tables.iter().any(|o| o.name == t.name);
        if !is_sql_name(&t.name) || taken {
            return Err(JobError::config(
                at(&format!("{key}.name")),
                format!(
                    "`{}` is not a plain SQL name the query does not use already",
                    t.name
                ),
            ));
        }
        let path = expand_env(&t.path, |name| std::env::var(name).ok())
            .map_err(|e| JobError::config(at(&format!("{key}.path")), e))?;
        if path.trim().is_empty() {
            return Err(JobError::config(at(&format!("{key}.path")), "is empty"));
        }
        tables.push(QueryTable { name: t.name, path });
    }
    Ok(QuerySpec {
        schema,
        view,
        sql,
        on_error,
        watermark,
        emit,
        metadata,
        tables,
    })
}

fn block_spec(file: &Path, raw: RawBlock) -> Result<BlockSpec> {
    let at = |key: &str| format!("{}: block.{key}", file.display());
    if raw.filter.trim().is_empty() {
        return Err(JobError::config(
            at("where"),
            "is empty (a predicate such as severity = 'critical')",
        ));
    }
    let path = expand_env(&raw.path, |name| std::env::var(name).ok())
        .map_err(|e| JobError::config(at("path"), e))?;
    if path.trim().is_empty() {
        return Err(JobError::config(at("path"), "is empty"));
    }
    Ok(BlockSpec {
        filter: raw.filter,
        path,
    })
}

/// `metadata`: which Kafka record columns the declared schema's view carries, and their names.
fn metadata_columns(
    raw: &BTreeMap<String, String>,
    schema: Option<&DeclaredSchema>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<MetadataColumn>> {
    let Some(declared) = schema else {
        return match raw.keys().next() {
            None => Ok(Vec::new()),
            Some(_) => Err(JobError::config(
                at("metadata"),
                "is for a declared schema (query.schema); without one the query reads Kafka's \
                 columns as they are",
            )),
        };
    };
    let kafka = crate::schemas::kafka_records_schema();
    let offered: Vec<&str> = kafka
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| *n != "value")
        .collect();
    let declared = declared.schema();
    let mut out = Vec::new();
    for (column, name) in raw {
        let key = at(&format!("metadata.{column}"));
        if !offered.contains(&column.as_str()) {
            return Err(JobError::config(
                key,
                format!(
                    "is not a Kafka record column (one of {})",
                    offered.join(", ")
                ),
            ));
        }
        if !is_sql_name(name) {
            return Err(JobError::config(
                key,
                format!("`{name}` is not a plain SQL name"),
            ));
        }
        if declared.field_with_name(name).is_ok()
            || out.iter().any(|m: &MetadataColumn| &m.name == name)
        {
            return Err(JobError::config(
                key,
                format!("`{name}` is already a column of the view"),
            ));
        }
        out.push(MetadataColumn {
            kafka: column.clone(),
            name: name.clone(),
        });
    }
    // Spark's column order, whatever the order in the file.
    out.sort_by_key(|m| offered.iter().position(|o| *o == m.kafka));
    Ok(out)
}

fn trigger(file: &Path, raw: Option<BTreeMap<String, toml::Value>>) -> Result<Trigger> {
    let key = format!("{}: writeStream.trigger", file.display());
    let Some(raw) = raw else {
        return Ok(Trigger::Continuous);
    };
    let mut entries = raw.into_iter();
    let (Some((kind, value)), None) = (entries.next(), entries.next()) else {
        return Err(JobError::config(
            key,
            "give exactly one of processingTime, availableNow, once",
        ));
    };
    let key = format!("{key}.{kind}");
    let flag = |value: &toml::Value| match value {
        toml::Value::Boolean(true) => Ok(()),
        _ => Err(JobError::config(&key, "must be true")),
    };
    match kind.as_str() {
        "processingTime" => {
            let text = match &value {
                toml::Value::String(s) => s.clone(),
                other => {
                    return Err(JobError::config(
                        &key,
                        format!(
                            "expected an interval such as \"5 seconds\", found {}",
                            other.type_str()
                        ),
                    ));
                }
            };
            let interval = parse_interval(&text).ok_or_else(|| {
                JobError::config(
                    &key,
                    format!("`{text}` is not an interval such as \"5 seconds\""),
                )
            })?;
            Ok(if interval.is_zero() {
                Trigger::Continuous
            } else {
                Trigger::ProcessingTime(interval)
            })
        }
        "availableNow" => flag(&value).map(|()| Trigger::AvailableNow),
        "once" => flag(&value).map(|()| Trigger::Once),
        other => Err(JobError::config(
            &key,
            format!("`{other}` is not processingTime, availableNow or once"),
        )),
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, TimeUnit};

    const GOOD: &str = r#"
name = "score-transactions"

[readStream]
format = "kafka"
[readStream.options]
"kafka.bootstrap.servers" = "127.0.0.1:9092"
subscribe = "transactions"
startingOffsets = '{"transactions":{"0":5,"1":-2}}'
maxOffsetsPerTrigger = 1000
failOnDataLoss = "false"
"kafka.fetch.max.bytes" = 1048576

[query]
schema = "transactions"
watermark = { column = "event_time", delay = "10 minutes" }

[writeStream]
format = "delta"
outputMode = "append"
trigger = { processingTime = "5 seconds" }
partitionBy = ["event_type"]
[writeStream.options]
path = "s3://lake/risk_scores"
checkpointLocation = "/tmp/cp"
mergeSchema = true
batchIdColumn = "batch_id"
"#;

    fn parse(text: &str) -> Result<JobSpec> {
        JobSpec::parse(Path::new("jobs/specs/x.toml"), text)
    }

    #[test]
    fn model_bindings_parse_and_bad_ones_name_their_key() {
        let with = |models: &str| parse(&format!("{GOOD}\n{models}"));
        let spec = with(
            "[[models]]\nfunction = \"fraud\"\nlake = \"${RISKSTREAM_TEST_UNSET_LAKE:-./lake}\"\nname = \"tx\"\nshadow = true\nrefresh = \"5 seconds\"",
        )
        .unwrap();
        let m = &spec.models[0];
        assert_eq!(m.lake, "./lake", "values expand from the environment");
        assert_eq!(
            (m.function.as_str(), m.name.as_str(), m.shadow),
            ("fraud", "tx", true)
        );
        assert_eq!((m.refresh, m.explain_from), (Duration::from_secs(5), 0.3));
        let cases = [
            (
                "function = \"1fraud\"\nlake = \"l\"\nname = \"tx\"",
                "models[0].function",
            ),
            (
                "function = \"f\"\nlake = \"l\"\nname = \"tx\"\nrefresh = \"soon\"",
                "models[0].refresh",
            ),
            (
                "function = \"f\"\nlake = \"\"\nname = \"tx\"",
                "models[0].lake",
            ),
            (
                "function = \"f\"\nlake = \"l\"\nname = \"tx\"\nexplainFrom = 2.0",
                "models[0].explainFrom",
            ),
            (
                "function = \"f\"\nlake = \"l\"\nname = \"tx\"\nversion = \"3\"",
                "version",
            ),
            (
                "function = \"f\"\nlake = \"l\"\nname = \"tx\"\ndefault = \"src\"",
                "models[0].default",
            ),
        ];
        for (body, key) in cases {
            let err = with(&format!("[[models]]\n{body}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{body}: {err}");
        }
        let twice = "[[models]]\nfunction = \"f\"\nlake = \"l\"\nname = \"a\"\n\
                     [[models]]\nfunction = \"f\"\nlake = \"l\"\nname = \"b\"";
        let err = with(twice).unwrap_err().to_string();
        assert!(
            err.contains("models[1].function") && err.contains("twice"),
            "{err}"
        );
    }

    #[test]
    fn a_spark_style_spec_parses() {
        let spec = parse(GOOD).unwrap();
        assert_eq!(spec.source.bootstrap_servers, "127.0.0.1:9092");
        assert!(spec.source.topics.matches("transactions"));
        assert!(!spec.source.topics.matches("transactions2"));
        assert_eq!(spec.source.max_offsets_per_trigger, Some(1000));
        assert!(!spec.source.fail_on_data_loss);
        let StartingOffsets::Specific(map) = &spec.source.starting_offsets else {
            unreachable!("{:?}", spec.source.starting_offsets)
        };
        assert_eq!(map["transactions"][&0], 5);
        assert_eq!(map["transactions"][&1], -2);
        assert_eq!(
            spec.source.kafka_options,
            vec![("fetch.max.bytes".to_string(), "1048576".to_string())]
        );
        assert_eq!(
            spec.trigger,
            Trigger::ProcessingTime(Duration::from_secs(5))
        );
        assert_eq!(spec.sink.dead_letter_path, "s3://lake/dead_letters");
        assert_eq!(spec.sink.late_events_path, "s3://lake/late_events");
        assert_eq!(
            spec.query.watermark,
            Some(WatermarkSpec {
                column: "event_time".into(),
                delay: Duration::from_secs(600),
            })
        );
        assert!(spec.sink.merge_schema);
        assert_eq!(spec.sink.compression, Codec::Zstd);
        assert_eq!(spec.query.view, "transactions");
        assert_eq!(spec.query.on_error, OnError::DeadLetter);
        let snappy = parse(&GOOD.replace(
            "mergeSchema = true",
            "mergeSchema = true\ncompression = \"Snappy\"",
        ));
        assert_eq!(snappy.unwrap().sink.compression, Codec::Snappy);
    }

    #[test]
    fn a_ddl_schema_is_decoded_under_the_view_it_names() {
        let ddl = "schema = \"auction BIGINT, price BIGINT, channel STRING, date_time TIMESTAMP\"";
        let spec = parse(
            &GOOD
                .replace(
                    "schema = \"transactions\"",
                    &format!("{ddl}\nview = \"bid\""),
                )
                .replace("event_time", "date_time"),
        )
        .unwrap();
        assert_eq!(spec.query.view, "bid");
        let schema = spec.query.input_schema();
        let columns: Vec<(&str, &DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(
            columns,
            [
                ("auction", &DataType::Int64),
                ("price", &DataType::Int64),
                ("channel", &DataType::Utf8),
                ("date_time", &utc)
            ]
        );

        // Refused, naming the key: no view to read it by, a type the decoder does not fill,
        // text that is neither a shipped name nor DDL.
        for (schema, key, why) in [
            (ddl, "query.view", "DDL schema"),
            (
                "schema = \"a BIGINT, tags ARRAY<STRING>\"\nview = \"v\"",
                "query.schema",
                "column `tags`",
            ),
            (
                "schema = \"a BIGNUM\"\nview = \"v\"",
                "query.schema",
                "BIGNUM",
            ),
            (
                "schema = \"a BIGINT, a STRING\"\nview = \"v\"",
                "query.schema",
                "declared twice",
            ),
            ("schema = \"trades\"", "query.schema", "DDL schema such as"),
        ] {
            let text = GOOD.replace("schema = \"transactions\"", schema).replace(
                "watermark = { column = \"event_time\", delay = \"10 minutes\" }",
                "",
            );
            let error = parse(&text).unwrap_err().to_string();
            assert!(
                error.contains(&format!("x.toml: {key}")) && error.contains(why),
                "{schema}: {error}"
            );
        }
    }

    #[test]
    fn mistakes_are_named_with_file_and_key() {
        let cases = [
            (
                GOOD.replace("subscribe =", "subscrbe ="),
                "readStream.options.subscrbe",
            ),
            (
                GOOD.replace("maxOffsetsPerTrigger = 1000", "maxOffsetsPerTrigger = -3"),
                "maxOffsetsPerTrigger",
            ),
            (
                GOOD.replace("failOnDataLoss = \"false\"", "failOnDataLoss = \"maybe\""),
                "failOnDataLoss",
            ),
            (
                GOOD.replace("5 seconds", "five"),
                "writeStream.trigger.processingTime",
            ),
            (
                GOOD.replace("outputMode = \"append\"", "outputMode = \"upsert\""),
                "outputMode",
            ),
            (
                GOOD.replace("schema = \"transactions\"", "schema = \"trades\""),
                "query.schema",
            ),
            (
                GOOD.replace("delay = \"10 minutes\"", "delay = \"a while\""),
                "query.watermark.delay",
            ),
            (
                GOOD.replace("column = \"event_time\"", "column = \"\""),
                "query.watermark.column",
            ),
            (
                GOOD.replace("watermark =", "emit = \"early\"\nwatermark ="),
                "query.emit",
            ),
            (
                GOOD.replace(
                    "watermark = { column = \"event_time\", delay = \"10 minutes\" }",
                    "emit = \"onArrival\"",
                ),
                "query.emit",
            ),
            (
                GOOD.replace(
                    "batchIdColumn",
                    "lateEventsPath = \"s3://lake/risk_scores\"\nbatchIdColumn",
                ),
                "writeStream.options.lateEventsPath",
            ),
            (
                GOOD.replace("127.0.0.1:9092", "localhost"),
                "kafka.bootstrap.servers",
            ),
            (
                GOOD.replace(
                    "mergeSchema = true",
                    "mergeSchema = true\nchekpointLocation = \"x\"",
                ),
                "chekpointLocation",
            ),
            (
                GOOD.replace("path = \"s3://lake/risk_scores\"\n", ""),
                "writeStream.options.path",
            ),
            (
                GOOD.replace("mergeSchema = true", "mergeSchema = true\ncompression = \"lzo\""),
                "writeStream.options.compression",
            ),
            (GOOD.replace("{\"0\":5", "{\"zero\":5"), "startingOffsets"),
            (
                GOOD.replace("'{\"transactions\"", "'{\"claims\""),
                "startingOffsets",
            ),
            (
                GOOD.replace("format = \"delta\"", "format = \"parquet\""),
                "writeStream.format",
            ),
            (
                GOOD.replace("[query]", "[query]\nfile = \"sql/none.sql\""),
                "query.file",
            ),
            (
                GOOD.replace("[query]", "[query]\nviews = [{ name = \"f\", file = \"x.sql\" }]"),
                "query.views",
            ),
            (
                GOOD.replace(
                    "[query]",
                    "[query]\nfile = \"../sql/scoring/claims.sql\"\nviews = [{ name = \"1f\", file = \"x.sql\" }]",
                ),
                "query.views[0].name",
            ),
            (
                GOOD.replace(
                    "[query]",
                    "[query]\nfile = \"../sql/scoring/claims.sql\"\nviews = [{ name = \"f\", file = \"sql/none.sql\" }]",
                ),
                "query.views[0].file",
            ),
            (
                GOOD.replace("\"kafka.fetch.max.bytes\"", "\"kafka.group.id\""),
                "kafka.group.id",
            ),
            (GOOD.replace("name = ", "nmae = "), "nmae"),
            (
                GOOD.replace("[query]", "[query]\nmetadata = { value = \"raw\" }"),
                "query.metadata.value",
            ),
            (
                GOOD.replace("[query]", "[query]\nmetadata = { offset = \"amount\" }"),
                "query.metadata.offset",
            ),
            (
                GOOD.replace("[query]", "[query]\nmetadata = { offset = \"o\", partition = \"o\" }"),
                "query.metadata.partition",
            ),
            (
                GOOD.replace("[query]", "[query]\nmetadata = { topic = \"source topic\" }"),
                "query.metadata.topic",
            ),
            (
                GOOD.replace("schema = \"transactions\"", "metadata = { topic = \"t\" }"),
                "query.metadata",
            ),
            (
                GOOD.replace(
                    "[query]",
                    "[query]\ntables = [{ name = \"transactions\", path = \"lake/t\" }]",
                ),
                "query.tables[0].name",
            ),
            (
                GOOD.replace("[query]", "[query]\ntables = [{ name = \"t\", path = \"\" }]"),
                "query.tables[0].path",
            ),
            (
                format!("{GOOD}\n[block]\nwhere = \" \"\npath = \"lake/blocked\"\n"),
                "block.where",
            ),
            (
                format!("{GOOD}\n[block]\nwhere = \"true\"\npath = \"${{NOPE_NOT_SET}}/b\"\n"),
                "block.path",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("jobs/specs/x.toml") && err.contains(key),
                "expected `{key}` in: {err}"
            );
        }
    }

    #[test]
    fn metadata_columns_join_the_declared_schema_in_kafka_order() {
        let spec = parse(&GOOD.replace(
            "[query]",
            "[query]\nmetadata = { offset = \"source_offset\", topic = \"source_topic\", key = \"kafka_key\" }",
        ))
        .unwrap();
        let kafka: Vec<&str> = spec
            .query
            .metadata
            .iter()
            .map(|m| m.kafka.as_str())
            .collect();
        assert_eq!(kafka, ["key", "topic", "offset"]);
        let schema = spec.query.input_schema();
        let declared = crate::schemas::source_schema(Source::Transactions);
        assert_eq!(schema.fields().len(), declared.fields().len() + 3);
        let added: Vec<(&str, &DataType)> = schema.fields()[declared.fields().len()..]
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        assert_eq!(
            added,
            [
                ("kafka_key", &DataType::Binary),
                ("source_topic", &DataType::Utf8),
                ("source_offset", &DataType::Int64)
            ]
        );
        assert_eq!(parse(GOOD).unwrap().query.input_schema(), declared);
    }

    const ALERTS: &str = r#"
[alerts]
format = "kafka"
where = "severity IN ('high', 'critical')"
[alerts.options]
"kafka.bootstrap.servers" = "127.0.0.1:9092"
topic = "risk-alerts"
keyColumn = "entity_id"
"kafka.linger.ms" = 20
"#;

    #[test]
    fn an_alert_sink_parses_and_its_mistakes_are_named() {
        let spec = parse(&format!("{GOOD}{ALERTS}")).unwrap();
        let alerts = spec.alerts.unwrap();
        assert_eq!(alerts.filter, "severity IN ('high', 'critical')");
        assert_eq!(alerts.table_path, None);
        let alerts = alerts.kafka.unwrap();
        assert_eq!(alerts.topic, "risk-alerts");
        assert_eq!(alerts.key_column.as_deref(), Some("entity_id"));
        assert_eq!(
            alerts.kafka_options,
            vec![("linger.ms".to_string(), "20".to_string())]
        );
        assert_eq!(alerts.message_timeout, Duration::from_secs(30));
        // The producer's message timeout, by either name, also bounds the wait for acks.
        let longer = ALERTS.replace(
            "\"kafka.linger.ms\" = 20",
            "\"kafka.delivery.timeout.ms\" = 120000",
        );
        let alerts = parse(&format!("{GOOD}{longer}"))
            .unwrap()
            .alerts
            .unwrap()
            .kafka
            .unwrap();
        assert_eq!(alerts.message_timeout, Duration::from_secs(120));
        assert!(alerts.kafka_options.is_empty());
        assert!(parse(GOOD).unwrap().alerts.is_none());
        // The table alone.
        let table = "\n[alerts]\nformat = \"delta\"\nwhere = \"severity = 'critical'\"\n[alerts.options]\npath = \"lake/alerts\"\n";
        let alerts = parse(&format!("{GOOD}{table}")).unwrap().alerts.unwrap();
        assert_eq!(alerts.kafka, None);
        assert_eq!(alerts.table_path.as_deref(), Some("lake/alerts"));
        let cases = [
            (ALERTS.replace("\"kafka\"", "\"redis\""), "alerts.format"),
            // A table alone needs its path, and takes no Kafka options.
            (
                "\n[alerts]\nformat = \"delta\"\nwhere = \"true\"\n".to_string(),
                "alerts.options.path",
            ),
            (
                ALERTS
                    .replace("\"kafka\"", "\"delta\"")
                    .replace("[alerts.options]", "[alerts.options]\npath = \"a\""),
                "alerts.options",
            ),
            (
                ALERTS.replace(
                    "\"kafka.linger.ms\" = 20",
                    "\"kafka.message.timeout.ms\" = \"soon\"",
                ),
                "alerts.options.kafka.message.timeout.ms",
            ),
            (ALERTS.replace("topic =", "topc ="), "alerts.options.topc"),
            (
                ALERTS.replace("\"kafka.linger.ms\" = 20", "\"kafka.acks\" = 1"),
                "alerts.options.kafka.acks",
            ),
            (
                ALERTS.replace(
                    "where = \"severity IN ('high', 'critical')\"",
                    "where = \" \"",
                ),
                "alerts.where",
            ),
        ];
        for (alerts, key) in cases {
            let err = parse(&format!("{GOOD}{alerts}")).unwrap_err().to_string();
            assert!(
                err.contains("jobs/specs/x.toml") && err.contains(key),
                "expected `{key}` in: {err}"
            );
        }
    }

    #[test]
    fn rule_weights_and_severity_cut_points_come_from_the_spec() {
        let spec = parse(&format!(
            "{GOOD}\n[rules.transaction_rules]\nvelocity_5m = 0.9\n[severity]\nmedium = 0.2\nhigh = 0.5\ncritical = 0.9"
        ))
        .unwrap();
        let set = spec
            .rule_sets
            .iter()
            .find(|s| s.name == "transaction_rules")
            .unwrap();
        assert_eq!(set.rules[0].code, "velocity_5m");
        assert_eq!(set.rules[0].weight, 0.9);
        assert_eq!(
            set.rules[1],
            RuleSet::defaults()[0].rules[1],
            "the others keep theirs"
        );
        assert_eq!((spec.severity.medium, spec.severity.high), (0.2, 0.5));
        assert_eq!(parse(GOOD).unwrap().severity, SeverityTiers::default());
        for (extra, key) in [
            ("[rules.card_rules]\nx = 0.1", "rules.card_rules"),
            (
                "[rules.claim_rules]\nvelocity_5m = 0.1",
                "rules.claim_rules.velocity_5m",
            ),
            (
                "[rules.claim_rules]\nearly_claim = 1.5",
                "rules.claim_rules.early_claim",
            ),
            (
                "[severity]\nmedium = 0.7\nhigh = 0.5\ncritical = 0.9",
                "severity",
            ),
        ] {
            let err = parse(&format!("{GOOD}\n{extra}")).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn views_surround_the_query_as_common_table_expressions() {
        let sql = with_views(
            &[("f", "WITH w AS (SELECT 1 AS x)\nSELECT x FROM w;\n".into())],
            "-- scores\nSELECT x + 1 AS y FROM f -- last\n",
        );
        assert_eq!(
            sql,
            "WITH f AS (\nWITH w AS (SELECT 1 AS x)\nSELECT x FROM w\n)\nSELECT * FROM (\n-- scores\nSELECT x + 1 AS y FROM f -- last\n)"
        );
        assert_eq!(with_views(&[], "SELECT 1"), "SELECT 1");
    }

    #[test]
    fn triggers_and_intervals() {
        assert_eq!(
            parse_interval("interval 1 minute"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_interval("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_interval("2 seconds"), Some(Duration::from_secs(2)));
        let t = |s: &str| {
            parse(&GOOD.replace("{ processingTime = \"5 seconds\" }", s)).map(|spec| spec.trigger)
        };
        assert_eq!(t("{ availableNow = true }").unwrap(), Trigger::AvailableNow);
        assert_eq!(t("{ once = true }").unwrap(), Trigger::Once);
        assert!(t("{ once = true, availableNow = true }").is_err());
        assert!(t("{ once = false }").is_err());
        let spec =
            parse(&GOOD.replace("trigger = { processingTime = \"5 seconds\" }\n", "")).unwrap();
        assert_eq!(spec.trigger, Trigger::Continuous);
    }

    #[test]
    fn environment_variables_expand_in_option_values() {
        let env = |name: &str| (name == "BROKER").then(|| "10.0.0.1:9092".to_string());
        assert_eq!(expand_env("${BROKER}", env).unwrap(), "10.0.0.1:9092");
        assert_eq!(
            expand_env("${PREFIX:-}transactions", env).unwrap(),
            "transactions"
        );
        assert_eq!(
            expand_env("${LAKE:-./lake-data}/x", env).unwrap(),
            "./lake-data/x"
        );
        let err = expand_env("${LAKE}/x", env).unwrap_err();
        assert!(err.contains("LAKE"), "{err}");
    }

    #[test]
    fn patterns_match_whole_topic_names() {
        let spec = parse(&GOOD.replace(
            "subscribe = \"transactions\"",
            "subscribePattern = \"trans.*|claims\"",
        ))
        .unwrap();
        assert!(spec.source.topics.matches("transactions"));
        assert!(spec.source.topics.matches("claims"));
        assert!(!spec.source.topics.matches("old-claims"));
    }
}
