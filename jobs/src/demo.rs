//! `riskstream demo`: the embedded default. Generates every stream in process into in-process
//! topics (partitioned and offset like Kafka's), then runs the shipped jobs over them, each to
//! the end of its topic in micro-batches: the three feature jobs, the labels job, and the three
//! scoring jobs (rolling features, rules and the served model). No broker, no object store
//! server: the same specs a deployment runs, with their tables and model registry in the demo's
//! lake.
//!
//! The jobs' checkpoints live in the lake under `_checkpoints/<run id>`, the run id derived from
//! the generator configuration and batch size, so running the same demo again on the same lake
//! resumes every job at the end of its topic and writes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use riskstream_lake::LakeLocation;

use crate::error::{JobError, Result};
use crate::generator::{GeneratorConfig, GeneratorStats};
use crate::stream::runner::{self, RunOptions, RunSummary};
use crate::stream::source::MemorySource;
use crate::stream::spec::{JobSpec, TopicSelection, Trigger};

/// The shipped specs the demo runs, in order: features and labels first, so the tables a
/// training export reads are there; then scoring.
pub const DEMO_JOBS: &[&str] = &[
    "transaction_features.toml",
    "claim_features.toml",
    "telemetry_features.toml",
    "fraud_labels.toml",
    "transactions.toml",
    "claims.toml",
    "telemetry.toml",
];

/// A demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// What to generate.
    pub generator: GeneratorConfig,
    /// Events to generate (labels not counted).
    pub events: u64,
    /// Records per micro-batch of each job.
    pub batch_events: u64,
    /// Where the tables go.
    pub lake: LakeLocation,
    /// The folder of the shipped job specs (`jobs/specs`); their SQL and model paths are
    /// relative to the working directory, as for `riskstream run`.
    pub specs: PathBuf,
    /// The specs to run, of [`DEMO_JOBS`] (all of them when empty), in that order.
    pub jobs: Vec<String>,
}

/// What one job of the demo did.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The spec's file name.
    pub spec: String,
    /// The job's output table (its folder name).
    pub table: String,
    /// Its dead-letter table (folder name).
    pub dead_letter_table: String,
    /// What the runner reports.
    pub summary: RunSummary,
}

/// What a demo run did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The run id: the checkpoints' folder under `_checkpoints/`.
    pub run_id: String,
    /// The generator's ground truth.
    pub stats: GeneratorStats,
    /// Each job, in the order run.
    pub jobs: Vec<JobReport>,
    /// Time spent generating the topics.
    pub generating: Duration,
    /// Wall-clock time, generation included.
    pub elapsed: Duration,
}

impl DemoReport {
    /// Rows the jobs appended to `table`.
    pub fn rows_written(&self, table: &str) -> u64 {
        self.jobs
            .iter()
            .filter(|j| j.table == table)
            .map(|j| j.summary.output_rows)
            .sum()
    }

    /// Rows appended to `dead_letters` (by the scoring and labels jobs; each feature job keeps
    /// its own).
    pub fn dead_letters(&self) -> u64 {
        self.jobs
            .iter()
            .filter(|j| j.dead_letter_table == "dead_letters")
            .map(|j| j.summary.dead_letter_rows)
            .sum()
    }

    /// Whether every job found its topic already processed (a rerun).
    pub fn nothing_new(&self) -> bool {
        self.jobs.iter().all(|j| j.summary.batches == 0)
    }

    /// Events per second through the jobs, generation left out.
    pub fn events_per_second(&self) -> f64 {
        let running = self.elapsed.saturating_sub(self.generating);
        self.stats.events() as f64 / running.as_secs_f64().max(1e-9)
    }
}

/// A stable id for a demo run: the same options give the same id, so a rerun is recognised and
/// writes nothing. Every option that shapes the topics and batches is in it, named, so the id
/// does not hang on a `Debug` format.
fn run_id(options: &DemoOptions) -> String {
    let g = &options.generator;
    let mix: Vec<String> = g
        .mix
        .iter()
        .map(|(s, w)| format!("{}:{w}", s.cli_name()))
        .collect();
    let text = format!(
        "seed={};mix={};fraud={};ooo={};late={};malformed={};neg={};delay={};start={};eps={};users={};policies={};devices={};events={};batch={}",
        g.seed,
        mix.join(","),
        g.fraud_rate,
        g.out_of_order_rate,
        g.late_rate,
        g.malformed_rate,
        g.negative_label_rate,
        g.label_delay_ms,
        g.start_ms,
        g.events_per_second,
        g.entities.users,
        g.entities.policies,
        g.entities.devices,
        options.events,
        options.batch_events,
    );
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("demo-{h:016x}")
}

/// The shipped spec `file` under `specs`, moved into the demo's lake and checkpoints.
fn demo_spec(
    specs: &Path,
    file: &str,
    lake: &str,
    checkpoints: &str,
    batch: u64,
) -> Result<JobSpec> {
    let mut spec = JobSpec::load(&specs.join(file))?;
    spec.relocate(lake, checkpoints);
    spec.source.max_offsets_per_trigger = Some(batch.max(1));
    // No broker here: the alerts go to their table alone.
    if let Some(alerts) = &mut spec.alerts {
        alerts.kafka = None;
    }
    Ok(spec)
}

/// Runs the demo to completion.
pub async fn run(options: &DemoOptions) -> Result<DemoReport> {
    let start = Instant::now();
    let run_id = run_id(options);
    let lake = options.lake.to_string();
    let checkpoints = format!("{}/_checkpoints/{run_id}", lake.trim_end_matches('/'));
    if let Some(unknown) = options
        .jobs
        .iter()
        .find(|j| !DEMO_JOBS.contains(&j.as_str()))
    {
        return Err(JobError::config(
            "--jobs",
            format!("`{unknown}` is not one of {}", DEMO_JOBS.join(", ")),
        ));
    }
    let files: Vec<&str> = DEMO_JOBS
        .iter()
        .copied()
        .filter(|f| options.jobs.is_empty() || options.jobs.iter().any(|j| j == f))
        .collect();
    // Every spec is read first: a missing or bad one fails before anything is generated.
    let specs = files
        .iter()
        .map(|file| {
            demo_spec(
                &options.specs,
                file,
                &lake,
                &checkpoints,
                options.batch_events,
            )
        })
        .collect::<Result<Vec<_>>>()?;

    let (config, events) = (options.generator.clone(), options.events);
    let (logs, stats) =
        tokio::task::spawn_blocking(move || MemorySource::generate_streams(config, events))
            .await
            .map_err(|e| JobError::internal(format!("the generator task failed: {e}")))??;
    let generating = start.elapsed();
    tracing::info!(
        events = stats.events(),
        labels = stats.labels,
        seconds = generating.as_secs_f64(),
        "topics generated"
    );

    let mut jobs = Vec::new();
    for (file, spec) in files.iter().zip(specs) {
        let topic = match &spec.source.topics {
            TopicSelection::Subscribe(topics) => topics[0].clone(),
            TopicSelection::Pattern(_) => {
                return Err(JobError::config(
                    spec.key("subscribePattern"),
                    "the demo runs jobs that subscribe to one topic",
                ));
            }
        };
        // The log of the stream the job subscribes to, whatever prefix its topic name has.
        let log = logs
            .iter()
            .find(|(stream, _)| topic.ends_with(stream.topic()))
            .map(|(_, log)| log.clone().renamed(&topic))
            .ok_or_else(|| {
                JobError::config(
                    spec.key("subscribe"),
                    format!("`{topic}` is not a generated topic"),
                )
            })??;
        let folder = |path: &str| path.rsplit('/').next().unwrap_or_default().to_string();
        let (table, dead_letter_table) =
            (folder(&spec.sink.path), folder(&spec.sink.dead_letter_path));
        let job_start = Instant::now();
        let summary = runner::run_with(
            RunOptions {
                spec,
                trigger: Trigger::AvailableNow,
                partitions: None,
                stop: Arc::new(AtomicBool::new(false)),
            },
            log,
            |_| {},
        )
        .await?;
        tracing::info!(
            job = file,
            batches = summary.batches,
            rows = summary.output_rows,
            seconds = job_start.elapsed().as_secs_f64(),
            "demo job done"
        );
        jobs.push(JobReport {
            spec: file.to_string(),
            table,
            dead_letter_table,
            summary,
        });
    }
    Ok(DemoReport {
        run_id,
        stats,
        jobs,
        generating,
        elapsed: start.elapsed(),
    })
}
