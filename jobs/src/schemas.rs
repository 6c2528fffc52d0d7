//! Arrow schemas: the declared schemas of the three event sources (the fast decoding path), of the
//! labels stream, of Spark's Kafka record columns, and of the tables the jobs write.
//!
//! Timestamps are microseconds in UTC, Delta's and Spark's `timestamp` type.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::generator::Source;

/// Delta's and Spark's timestamp type.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn f64(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

fn i64(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn date(name: &str) -> Field {
    Field::new(name, DataType::Date32, true)
}

fn boolean(name: &str) -> Field {
    Field::new(name, DataType::Boolean, true)
}

fn event_header() -> Vec<Field> {
    vec![
        utf8("event_id", false),
        utf8("event_type", false),
        Field::new("event_time", timestamp_type(), false),
    ]
}

static TRANSACTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = event_header();
    f.extend([
        utf8("user_id", false),
        utf8("card_id", true),
        utf8("merchant_id", true),
        utf8("merchant_name", true),
        utf8("mcc", true),
        utf8("merchant_category", true),
        Field::new("amount", DataType::Float64, false),
        utf8("currency", true),
        utf8("channel", true),
        utf8("payment_method", true),
        utf8("card_type", true),
        utf8("device_id", true),
        utf8("ip_address", true),
        f64("latitude"),
        f64("longitude"),
        utf8("city", true),
        utf8("country", true),
        utf8("card_country", true),
        i64("account_age_days"),
        utf8("email_domain", true),
    ]);
    Arc::new(Schema::new(f))
});

static CLAIMS: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = event_header();
    f.extend([
        utf8("claim_id", false),
        utf8("policy_id", false),
        utf8("user_id", true),
        utf8("claim_type", true),
        utf8("incident_type", true),
        Field::new("claim_amount", DataType::Float64, false),
        utf8("currency", true),
        date("policy_start_date"),
        f64("policy_premium"),
        f64("coverage_limit"),
        f64("deductible"),
        date("incident_date"),
        date("report_date"),
        i64("prior_claims"),
        f64("latitude"),
        f64("longitude"),
        utf8("city", true),
        utf8("country", true),
        utf8("weather", true),
        utf8("provider_id", true),
        utf8("provider_type", true),
        utf8("adjuster_id", true),
        boolean("police_report"),
        i64("witnesses"),
        utf8("channel", true),
        boolean("injury_involved"),
        i64("vehicle_age_years"),
    ]);
    Arc::new(Schema::new(f))
});

static TELEMETRY: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut f = event_header();
    f.extend([
        utf8("device_id", false),
        utf8("device_type", true),
        utf8("site_id", true),
        utf8("city", true),
        utf8("country", true),
        f64("latitude"),
        f64("longitude"),
        utf8("firmware_version", true),
        utf8("criticality", true),
        Field::new("reading", DataType::Float64, false),
        utf8("unit", true),
        f64("normal_min"),
        f64("normal_max"),
        f64("load_pct"),
        f64("ambient_temp_c"),
        f64("humidity_pct"),
        f64("battery_pct"),
        i64("signal_dbm"),
        i64("uptime_hours"),
        date("last_maintenance"),
        date("maintenance_due"),
        utf8("error_code", true),
    ]);
    Arc::new(Schema::new(f))
});

static LABELS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("event_id", false),
        utf8("event_type", false),
        Field::new("label", DataType::Int32, false),
        utf8("pattern", true),
        Field::new("event_time", timestamp_type(), true),
        Field::new("label_time", timestamp_type(), false),
    ]))
});

static KAFKA_RECORDS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        utf8("topic", false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", timestamp_type(), false),
        Field::new("timestampType", DataType::Int32, false),
    ]))
});

static DEAD_LETTERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("topic", false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", timestamp_type(), true),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        utf8("error", false),
        Field::new("batch_id", DataType::Int64, false),
        Field::new("recorded_at", timestamp_type(), false),
    ]))
});

static BLOCKED_ENTITIES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        utf8("entity_id", false),
        utf8("event_type", true),
        utf8("event_id", true),
        Field::new("event_time", timestamp_type(), true),
        f64("risk_score"),
        utf8("severity", true),
        Field::new(
            "reasons",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
        Field::new("blocked_at", timestamp_type(), false),
        Field::new("batch_id", DataType::Int64, false),
    ]))
});

/// The declared schema of a source's events.
pub fn source_schema(source: Source) -> SchemaRef {
    match source {
        Source::Transactions => Arc::clone(&TRANSACTIONS),
        Source::Claims => Arc::clone(&CLAIMS),
        Source::Telemetry => Arc::clone(&TELEMETRY),
    }
}

/// The schema of `fraud-labels` messages and of the `fraud_labels` table.
pub fn labels_schema() -> SchemaRef {
    Arc::clone(&LABELS)
}

/// Spark's Kafka source columns: `key`, `value`, `topic`, `partition`, `offset`, `timestamp`,
/// `timestampType`.
pub fn kafka_records_schema() -> SchemaRef {
    Arc::clone(&KAFKA_RECORDS)
}

/// The `risk_scores` columns every shipped scoring job writes, in order: the contract later
/// stages and users rely on (the three jobs share the table, so their SQL must agree).
pub const RISK_SCORES_COLUMNS: &[&str] = &[
    "event_id",
    "event_type",
    "entity_id",
    "event_time",
    "risk_score",
    "severity",
    "reasons",
    "model_version",
    "rules_score",
    "model_score",
    "gbdt_score",
    "anomaly_score",
    "top_features",
    "source_topic",
    "source_partition",
    "source_offset",
    "batch_id",
    "scored_at",
];

/// The `blocked_entities` table (`[block]`): one row per blocking, naming the entity and the
/// scored event that blocked it. The columns up to `reasons` come from the job's output row;
/// `blocked_at` is the batch's processing time.
pub fn blocked_entities_schema() -> SchemaRef {
    Arc::clone(&BLOCKED_ENTITIES)
}

/// The `dead_letters` table: every message that did not decode, with its raw bytes and the reason.
pub fn dead_letters_schema() -> SchemaRef {
    Arc::clone(&DEAD_LETTERS)
}
