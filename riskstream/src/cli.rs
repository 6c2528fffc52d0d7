//! Command-line flags. Values are checked by clap's parsers, so a bad value fails before any work
//! starts, naming the flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use riskstream_lake::Codec;

/// Riskstream: a Spark-compatible streaming engine for real-time risk scoring.
#[derive(Debug, Parser)]
#[command(name = "riskstream", version, about)]
pub struct Cli {
    /// Log lines as text (default) or as one JSON object each, for log collectors (also
    /// RISKSTREAM_LOG_FORMAT).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "RISKSTREAM_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, fields (the message among them).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate transactions, claims and IoT telemetry with planted fraud, into Kafka, a file or
    /// stdout.
    Generate(GenerateArgs),
    /// Run the embedded default: generate events in process, score them in micro-batches and
    /// write Delta tables to a local folder (or s3://). No servers needed.
    Demo(DemoArgs),
    /// Run a streaming job from its spec file (Kafka -> SQL -> Delta, exactly once).
    Run(RunArgs),
    /// Run SQL over every Delta table under a lake root (Spark SQL, time travel, DESCRIBE
    /// HISTORY; read-only).
    Sql(SqlArgs),
    /// Serve the lake over Arrow Flight SQL, for ADBC, JDBC and BI tools (read-only).
    Serve(ServeArgs),
    /// Compact a table's small files (bin-packing, optionally Z-order); safe while jobs append.
    Optimize(OptimizeArgs),
    /// Delete files that no table version within the retention needs; safe while jobs append.
    Vacuum(VacuumArgs),
    /// Write a Delta checkpoint of a table now (jobs write one every checkpointInterval commits).
    Checkpoint(TableArgs),
    /// Measure the engine (see BENCHMARKS.md and scripts/bench.sh).
    Bench(BenchArgs),
    /// Score files with a model, outside any job.
    Model(ModelArgs),
    /// Export a point-in-time training set: a feature table's rows in a time range, each with
    /// the label that had arrived by a cut-off, negatives down-sampled, split by time.
    Export(ExportArgs),
    /// Train a model (GBDT and isolation forest) from a labelled Parquet training set, writing a
    /// model folder with its validation figures.
    Train(TrainArgs),
}

/// `riskstream export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Lake root: a local folder or s3://bucket/prefix.
    #[arg(long, default_value = "./lake-data")]
    pub lake: String,
    /// The feature table: one row per event, with `event_id` and `event_time`.
    #[arg(long, default_value = "transaction_features")]
    pub features: String,
    /// The labels table: `event_id`, `label` (1 fraud), `label_time`.
    #[arg(long, default_value = "fraud_labels")]
    pub labels: String,
    /// First event time exported (RFC 3339, such as 2026-11-01T00:00:00Z).
    #[arg(long, value_parser = instant)]
    pub from: chrono::DateTime<chrono::Utc>,
    /// Event times before this are exported.
    #[arg(long, value_parser = instant)]
    pub to: chrono::DateTime<chrono::Utc>,
    /// Labels that arrived after this are ignored, as if the export ran then (default: now).
    #[arg(long, value_parser = instant)]
    pub cutoff: Option<chrono::DateTime<chrono::Utc>>,
    /// Events from this time on are marked `validation` in the `split` column, earlier ones
    /// `train` (default: the last fifth of the range).
    #[arg(long, value_parser = instant)]
    pub validation_from: Option<chrono::DateTime<chrono::Utc>>,
    /// Share of negative (label 0) rows kept; each kept one gets `weight` 1/rate.
    #[arg(long, default_value_t = 1.0, value_parser = sample_rate)]
    pub negative_rate: f64,
    /// Seed of the down-sampling (which negatives are kept depends on it and the event id only).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The new folder, local or s3://bucket/prefix: data.parquet (or data.csv) and manifest.json.
    #[arg(long)]
    pub out: String,
    /// CSV instead of Parquet.
    #[arg(long)]
    pub csv: bool,
}

/// An RFC 3339 instant.
fn instant(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time such as 2026-11-01T00:00:00Z: {e}"))
}

/// A sampling rate in (0, 1].
fn sample_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not in (0, 1]"))
    }
}

/// `riskstream train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training set: a folder `riskstream export` wrote, local or s3://bucket/prefix (its
    /// features, `split` and `weight` columns are then used), a Parquet file, or a folder of
    /// Parquet files.
    #[arg(long)]
    pub input: String,
    /// Column saying which rows validate (`validation`) and which train (anything else);
    /// without it the latest `--validation-fraction` of rows by `--time-column` validate.
    #[arg(long)]
    pub split_column: Option<String>,
    /// Column of per-row training weights (an export's `weight`: 1/rate for down-sampled
    /// negatives).
    #[arg(long)]
    pub weight_column: Option<String>,
    /// The label column (1 or true for fraud, 0 or false otherwise).
    #[arg(long, default_value = "label")]
    pub label: String,
    /// Feature columns, comma-separated (default: every numeric or boolean column but the label
    /// and the time column).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Column whose order splits training from validation rows: the latest rows validate, as
    /// they would in production (default: no sorting, the file's last rows).
    #[arg(long)]
    pub time_column: Option<String>,
    /// Share of rows kept for validation.
    #[arg(long, default_value_t = 0.2, value_parser = open_fraction)]
    pub validation_fraction: f64,
    /// The new model folder (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// The model's name.
    #[arg(long, default_value = "model")]
    pub name: String,
    /// The model's version.
    #[arg(long, default_value = "1")]
    pub version: String,
    /// Boosting rounds.
    #[arg(long, default_value_t = 100)]
    pub rounds: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub eta: f64,
    /// Maximum tree depth.
    #[arg(long, default_value_t = 6)]
    pub max_depth: usize,
    /// Smallest hessian sum of a child.
    #[arg(long, default_value_t = 1.0)]
    pub min_child_weight: f64,
    /// Fraction of rows each tree sees.
    #[arg(long, default_value_t = 1.0)]
    pub subsample: f64,
    /// Isolation forest trees (0 for none).
    #[arg(long, default_value_t = 100)]
    pub forest_trees: usize,
    /// Weight of the GBDT in the blended score.
    #[arg(long, default_value_t = riskstream_udfs::model::DEFAULT_GBDT_WEIGHT)]
    pub gbdt_weight: f64,
    /// Weight of the isolation forest in the blended score.
    #[arg(long, default_value_t = riskstream_udfs::model::DEFAULT_ANOMALY_WEIGHT)]
    pub anomaly_weight: f64,
    /// Seed of every random choice: the same input and seed give the same model.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// A fraction strictly between 0 and 1.
fn open_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not strictly between 0 and 1"))
    }
}

/// `riskstream model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelCommand,
}

/// The model subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Score the rows of a Parquet file with a model file (XGBoost JSON or a Riskstream
    /// isolation forest), writing them to a Parquet file with the model's columns added:
    /// score, gbdt, anomaly, top_features, model_version.
    Predict(PredictArgs),
    /// Publish a model folder into the lake's registry as models/<name>/<version>/ (name and
    /// version from its model.json); a version is written once.
    Publish(PublishArgs),
    /// Make a published version the champion (the scores that count) or the challenger (scored
    /// in shadow beside it); running jobs pick it up without a restart.
    Promote(PromoteArgs),
    /// List the registry's models, versions, champion and challenger, with validation ROC-AUC.
    List(RegistryArgs),
    /// Measure scores a job wrote against the labels that arrived: ROC-AUC, PR-AUC and recall
    /// at a false-positive rate, per score column (an event without a positive label counts as
    /// genuine).
    Evaluate(EvaluateArgs),
}

/// `riskstream model evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Lake root: a local folder or s3://bucket/prefix.
    #[arg(long, default_value = "./lake-data")]
    pub lake: String,
    /// The table of scores, with an `event_id` column.
    #[arg(long, default_value = "risk_scores")]
    pub scores: String,
    /// The labels table (`event_id`, `label`).
    #[arg(long, default_value = "fraud_labels")]
    pub labels: String,
    /// The scores to measure, separated by `;`: columns of the scores table or SQL
    /// expressions over them (`0.9 * gbdt_score + 0.1 * rules_score`).
    #[arg(long, value_delimiter = ';', default_value = "risk_score")]
    pub columns: Vec<String>,
    /// A SQL predicate choosing the scored rows, such as `event_type = 'transaction'`.
    #[arg(long = "where")]
    pub filter: Option<String>,
    /// The false-positive rate recall is measured at.
    #[arg(long, default_value_t = 0.01)]
    pub fpr: f64,
}

/// The registry of a lake.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Lake root: a local folder or s3://bucket/prefix; models live under models/.
    #[arg(long, default_value = "./lake-data")]
    pub lake: String,
}

/// `riskstream model publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The model folder, as `riskstream train` writes it.
    #[arg(long)]
    pub model: PathBuf,
}

/// `riskstream model promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The registry.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// The model's name.
    pub name: String,
    /// The version to promote.
    pub version: String,
    /// Make it the challenger instead of the champion.
    #[arg(long)]
    pub challenger: bool,
}

/// `riskstream model predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model: a model folder (with model.json) as `riskstream train` writes, or one file,
    /// XGBoost JSON or a Riskstream isolation forest. Its features are read from the input's
    /// columns of the same names.
    #[arg(long)]
    pub model: PathBuf,
    /// Parquet file (or folder of Parquet files) to score.
    #[arg(long)]
    pub input: PathBuf,
    /// Parquet file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// How many contributing features to report per row (GBDT models).
    #[arg(long, default_value_t = 3)]
    pub top_features: usize,
}

/// `riskstream bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// A job's engine without a broker: generates events into an in-process log first (not
    /// timed), then runs the spec's decoding, SQL and Delta sinks over them (availableNow) and
    /// reports events/s. The spec's alerts are left out (they need a broker).
    Engine(EngineBenchArgs),
    /// Nexmark's queries (bench/nexmark/q*.toml): generates the benchmark's bids into an
    /// in-process log first (not timed), then runs the spec over them (availableNow) and
    /// reports bids/s.
    Nexmark(NexmarkBenchArgs),
    /// JSON decoding alone, on one core: generates a source's events (malformed ones included)
    /// and decodes them into the declared schema's columns, all of them and, with `--columns`,
    /// only those (every field still read and checked, as a job that reads a few does).
    Decode(DecodeBenchArgs),
}

/// `riskstream bench decode`.
#[derive(Debug, Args)]
pub struct DecodeBenchArgs {
    /// The events to decode.
    #[arg(long, value_enum, default_value = "transactions")]
    pub source: SourceArg,
    /// Events to generate and decode.
    #[arg(long, default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Timed runs over the same events; the best and the median are reported.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Also decode building only these columns (comma-separated), as the windowed-spend
    /// benchmark does with event_time,user_id,amount.
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// `riskstream bench nexmark`.
#[derive(Debug, Args)]
pub struct NexmarkBenchArgs {
    /// The query's job spec, such as bench/nexmark/q5.toml; its query.schema is the bid's.
    pub spec: PathBuf,
    /// Bids to generate and run (about 92% of a Nexmark stream's events).
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Nexmark events (people, auctions and bids) per second of event time.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub event_rate: u64,
    /// A new folder for the run's tables and checkpoint (instead of the spec's paths).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// `riskstream bench engine`.
#[derive(Debug, Args)]
pub struct EngineBenchArgs {
    /// The job spec, such as jobs/specs/transactions.toml; its query.schema names the events.
    pub spec: PathBuf,
    /// Events to generate and run.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Card holders (and policyholders) in the generated population.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub users: u64,
    /// Events per second of event time (how much history a window holds).
    #[arg(long, default_value_t = 1000.0, value_parser = positive)]
    pub event_rate: f64,
    /// A new folder for the run's tables and checkpoint (instead of the spec's paths).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// `riskstream run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job spec (TOML), such as jobs/specs/transactions.toml.
    pub spec: PathBuf,
    /// Read everything available now, in bounded batches, then stop (overrides the spec's
    /// trigger, as Spark's Trigger.AvailableNow).
    #[arg(long)]
    pub available_now: bool,
    /// Read only these partitions of the subscribed topics (such as `0-5` or `0,2,4`), to split a
    /// job across processes. Each set of partitions keeps its own checkpoint under the spec's
    /// checkpointLocation.
    #[arg(long, value_parser = partition_list)]
    pub partitions: Option<PartitionList>,
    /// Serve Prometheus metrics on http://ADDR/metrics, with /healthz and /readyz (such as
    /// 0.0.0.0:9464).
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Partition numbers given with `--partitions`, sorted and without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionList(pub Vec<i32>);

/// `--source` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    /// Card transactions (financial-transactions).
    Transactions,
    /// Insurance claims (insurance-claims).
    Claims,
    /// IoT telemetry (iot-telemetry).
    Iot,
    /// All three, mixed 40% / 35% / 25%.
    All,
}

/// Options of the event generator shared by `generate` and `demo`.
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// Seed: the same seed and options give the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Streams to generate (repeat or comma-separate).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub source: Vec<SourceArg>,
    /// Fraction of events in planted fraud or anomaly patterns.
    #[arg(long, default_value_t = 0.02, value_parser = fraction)]
    pub fraud_rate: f64,
    /// Fraction of malformed (undecodable) messages.
    #[arg(long, default_value_t = 0.005, value_parser = fraction)]
    pub malformed: f64,
    /// Fraction of events arriving out of order (event time up to 30 s in the past).
    #[arg(long, default_value_t = 0.05, value_parser = fraction)]
    pub out_of_order: f64,
    /// Fraction of late events (event time 2 to 30 minutes in the past).
    #[arg(long, default_value_t = 0.005, value_parser = fraction)]
    pub late: f64,
    /// Number of card holders.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub users: u64,
    /// Number of insurance policies.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub policies: u64,
    /// Number of IoT devices.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub devices: u64,
    /// Event time of the first event (RFC 3339); default: now for `generate`, and a fixed
    /// 2026-01-01T00:00:00Z for `demo`, so that a demo is reproducible from its seed.
    #[arg(long, value_parser = rfc3339_ms)]
    pub start_time: Option<i64>,
    /// Events per second of event time; default: --rate, or 1000 when --rate is 0.
    #[arg(long, value_parser = positive)]
    pub event_rate: Option<f64>,
    /// Typical (median) delay between an event and its label, in event time (chargebacks take
    /// days; the default keeps demos short).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub label_delay: Duration,
}

/// `riskstream generate`.
#[derive(Debug, Args)]
// So that `--rate -5` reaches the value check ("-5 is negative") instead of reading as a flag.
#[command(allow_negative_numbers = true)]
pub struct GenerateArgs {
    /// Generator options.
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Where to send events: kafka://HOST:PORT, file:PATH (a folder gets one file per topic),
    /// stdout, or null.
    #[arg(long, default_value = "stdout")]
    pub to: String,
    /// Prepended to every topic (and file) name, such as `staging.`.
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// Events per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
    pub rate: f64,
    /// Stop after this many events.
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Stop after this long (for example 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// No per-second throughput lines.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the final summary as JSON to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// `riskstream demo`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct DemoArgs {
    /// Generator options.
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Events to generate and score.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Records per micro-batch of each job.
    #[arg(long, default_value_t = 250_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_events: u64,
    /// Lake root: a local folder or s3://bucket/prefix.
    #[arg(long, default_value = "./lake-data")]
    pub lake: String,
    /// The shipped job specs the demo runs (their SQL and model paths are relative to the
    /// working directory).
    #[arg(long, default_value = "jobs/specs")]
    pub specs: PathBuf,
    /// Only these of the shipped specs, comma-separated (such as
    /// `transaction_features.toml,fraud_labels.toml`, the tables a training export reads).
    #[arg(long, value_delimiter = ',')]
    pub jobs: Vec<String>,
    /// Also write the run's report as JSON to this file.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// A table of a lake.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// Lake root: a local folder or s3://bucket/prefix.
    #[arg(long, default_value = "./lake-data")]
    pub lake: String,
    /// The table's name, as SQL names it (`risk_scores`).
    pub table: String,
}

/// `riskstream optimize`.
#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// The table.
    #[command(flatten)]
    pub table: TableArgs,
    /// Z-order the rewritten files by these columns (comma-separated), so that filters on them
    /// skip more files.
    #[arg(long, value_delimiter = ',')]
    pub zorder_by: Vec<String>,
    /// Target file size in MiB (default: the table's delta.targetFileSize, else 100 MiB).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub target_size_mib: Option<u64>,
    /// Compression of the rewritten files, as a job's `compression` option names it: snappy,
    /// zstd, lz4_raw, gzip or none. Give the codec the table's jobs write.
    #[arg(long, default_value = "zstd")]
    pub compression: Codec,
}

/// `riskstream vacuum`.
#[derive(Debug, Args)]
pub struct VacuumArgs {
    /// The table.
    #[command(flatten)]
    pub table: TableArgs,
    /// Keep every file a version of the last RETAIN needs (time travel that far back keeps
    /// working), such as 168h.
    #[arg(long, default_value = "168h", value_parser = humantime::parse_duration)]
    pub retain: Duration,
    /// Allow a retention shorter than the table's delta.deletedFileRetentionDuration (readers of
    /// older versions and running jobs may then fail).
    #[arg(long)]
    pub force: bool,
    /// List the files that would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `riskstream serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Settings file (TOML): users, tokens, TLS, limits; see README.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Lake root: a local folder or s3://bucket/prefix (overrides the config's `lake`).
    #[arg(long)]
    pub lake: Option<String>,
    /// Address to listen on (overrides the config's `bind`; default 127.0.0.1:50051; port 0
    /// picks a free port, printed on start).
    #[arg(long)]
    pub bind: Option<String>,
    /// Serve Prometheus metrics (statements, rows, durations) on http://ADDR/metrics, with
    /// /healthz and /readyz.
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Output formats of `riskstream sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table.
    Table,
    /// CSV with a header.
    Csv,
    /// One JSON object per line.
    Json,
    /// Parquet (only with --out).
    Parquet,
}

/// `riskstream sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Lake root: a local folder or s3://bucket/prefix.
    #[arg(long, default_value = "./lake-data")]
    pub lake: String,
    /// Output format (default: from --out's extension, else table).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the result to this file (local path) instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Read the statements from a file instead.
    #[arg(short = 'f', long = "file", conflicts_with = "query")]
    pub file: Option<PathBuf>,
    /// The statement(s), separated by `;`. Without a query or a file: statements piped on
    /// standard input, or an interactive shell on a terminal.
    pub query: Option<String>,
}

/// Parses `0-5`, `0,2,4` or a mix (`0-3,8`) into sorted partition numbers.
fn partition_list(s: &str) -> Result<PartitionList, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |t: &str| {
            t.trim()
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("`{t}` is not a partition number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("`{part}` is an empty range"));
                }
                out.extend(a..=b);
            }
            None => out.push(number(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("names no partition".into());
    }
    Ok(PartitionList(out))
}

fn parse_f64(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("`{s}` is not a number"))
        .and_then(|v| {
            if v.is_finite() {
                Ok(v)
            } else {
                Err(format!("`{s}` is not finite"))
            }
        })
}

fn fraction(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside [0, 1]"))
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} is negative"))
    }
}

fn positive(s: &str) -> Result<f64, String> {
    let v = parse_f64(s)?;
    if v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not positive"))
    }
}

fn rfc3339_ms(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!("`{s}` is not an RFC 3339 time ({e}), for example 2026-11-22T00:00:00Z")
        })
}
