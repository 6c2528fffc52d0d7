//! Prometheus metrics of a running job (`riskstream run --metrics-addr`), built from its progress
//! reports, with `/healthz` and `/readyz` beside them for orchestrators.
//!
//! The exposition is Prometheus's text format (version 0.0.4), written here: every value comes
//! from the progress report of a committed batch, so the numbers on `/metrics` are the ones in
//! the checkpoint's progress log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use riskstream_jobs::stream::progress::QueryProgress;
use riskstream_jobs::stream::scores::SCORE_BOUNDS;
use riskstream_query::flight::{Outcome, QUERY_SECONDS_BOUNDS, QueryStats};

use crate::commands::CommandError;

/// Bounds (seconds) of the batch and commit duration histograms.
const DURATION_BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram as Prometheus keeps one: counts per upper bound (not cumulative here), sum, count.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        let at = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[at] += 1;
        self.sum += value;
        self.count += 1;
    }
}

/// Everything `/metrics` reports, updated from each batch's progress.
#[derive(Debug)]
struct JobState {
    ready: bool,
    batches: u64,
    replayed_batches: u64,
    last_batch_id: i64,
    input_rows: u64,
    output_rows: u64,
    dead_letters: u64,
    late_rows: u64,
    input_rows_per_second: f64,
    processed_rows_per_second: f64,
    batch_duration: Histogram,
    commit_duration: Histogram,
    /// (topic, partition) -> the latest offset minus the offset the job has read up to.
    lag: BTreeMap<(String, String), i64>,
    /// Event-time watermark, ms since the epoch.
    watermark_ms: Option<i64>,
    state_rows: u64,
    state_bytes: u64,
    scores: Histogram,
    severity: BTreeMap<String, u64>,
    alerts: BTreeMap<String, u64>,
    alerts_published: u64,
    table_versions: BTreeMap<String, u64>,
}

/// What the metrics endpoint serves.
pub trait Exporter: Send + Sync + 'static {
    /// The metrics in Prometheus's text format.
    fn render(&self) -> String;
    /// Whether `/readyz` says ready.
    fn ready(&self) -> bool;
}

/// A job's metrics, shared by the runner (which observes) and the HTTP server (which reads).
#[derive(Debug)]
pub struct JobMetrics {
    job: String,
    state: Mutex<JobState>,
}

impl JobMetrics {
    /// Metrics of the job named `job`.
    pub fn new(job: &str) -> Arc<Self> {
        Arc::new(Self {
            job: job.to_string(),
            state: Mutex::new(JobState {
                ready: false,
                batches: 0,
                replayed_batches: 0,
                last_batch_id: -1,
                input_rows: 0,
                output_rows: 0,
                dead_letters: 0,
                late_rows: 0,
                input_rows_per_second: 0.0,
                processed_rows_per_second: 0.0,
                batch_duration: Histogram::new(&DURATION_BOUNDS),
                commit_duration: Histogram::new(&DURATION_BOUNDS),
                lag: BTreeMap::new(),
                watermark_ms: None,
                state_rows: 0,
                state_bytes: 0,
                scores: Histogram::new(&SCORE_BOUNDS[..SCORE_BOUNDS.len() - 1]),
                severity: BTreeMap::new(),
                alerts: BTreeMap::new(),
                alerts_published: 0,
                table_versions: BTreeMap::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The query has started: the job is ready.
    pub fn start(&self) {
        self.state().ready = true;
    }

    /// Takes in a batch's progress.
    pub fn observe(&self, p: &QueryProgress) {
        let mut s = self.state();
        s.ready = true;
        s.batches += 1;
        s.replayed_batches += u64::from(p.replayed);
        s.last_batch_id = p.batch_id;
        s.input_rows += p.num_input_rows;
        s.output_rows += p.sink.num_output_rows;
        s.dead_letters += p.sink.num_dead_letter_rows;
        s.late_rows += p.sink.num_late_rows.unwrap_or(0);
        s.input_rows_per_second = p.input_rows_per_second;
        s.processed_rows_per_second = p.processed_rows_per_second;
        s.batch_duration.observe(p.batch_duration as f64 / 1000.0);
        s.commit_duration
            .observe(p.duration_ms.commit as f64 / 1000.0);
        for source in &p.sources {
            for (topic, partitions) in &source.latest_offset {
                for (partition, latest) in partitions {
                    let read = source
                        .end_offset
                        .get(topic)
                        .and_then(|p| p.get(partition))
                        .copied()
                        .unwrap_or(*latest);
                    s.lag.insert(
                        (topic.clone(), partition.to_string()),
                        (latest - read).max(0),
                    );
                }
            }
        }
        s.watermark_ms = p
            .event_time
            .get("watermark")
            .and_then(|w| chrono::DateTime::parse_from_rfc3339(w).ok())
            .map(|t| t.timestamp_millis())
            // Spark's watermark starts at the epoch: none yet.
            .filter(|ms| *ms > 0);
        s.state_rows = p.state_operators.iter().map(|o| o.num_rows_total).sum();
        s.state_bytes = p.state_operators.iter().map(|o| o.memory_used_bytes).sum();
        if let Some(scores) = &p.scores {
            for (bucket, n) in scores.risk_score_buckets.iter().enumerate() {
                s.scores.counts[bucket] += n;
                s.scores.count += n;
            }
            s.scores.sum += scores.risk_score_sum;
            for (tier, n) in &scores.severity {
                *s.severity.entry(tier.clone()).or_default() += n;
            }
        }
        if let Some(alerts) = &p.alerts {
            s.alerts_published += alerts.num_output_rows;
            for (tier, n) in &alerts.by_severity {
                *s.alerts.entry(tier.clone()).or_default() += n;
            }
        }
        for (table, version) in &p.sink.table_versions {
            s.table_versions.insert(table.clone(), *version);
        }
    }

    fn render_job(&self) -> String {
        let s = self.state();
        let mut out = Exposition::new(&self.job);
        let none: &[(&str, &str)] = &[];
        out.family("riskstream_up", "gauge", "1 once the query has started");
        out.sample("riskstream_up", none, f64::from(u8::from(s.ready)));
        for (name, help, value) in [
            (
                "riskstream_batches_total",
                "Micro-batches committed",
                s.batches,
            ),
            (
                "riskstream_replayed_batches_total",
                "Batches replayed after a restart",
                s.replayed_batches,
            ),
            ("riskstream_input_rows_total", "Records read", s.input_rows),
            (
                "riskstream_output_rows_total",
                "Rows written to the job's table",
                s.output_rows,
            ),
            (
                "riskstream_dead_letters_total",
                "Records that did not decode, written to the dead-letter table",
                s.dead_letters,
            ),
            (
                "riskstream_late_rows_total",
                "Rows behind the watermark, written to the late-events table",
                s.late_rows,
            ),
            (
                "riskstream_alerts_published_total",
                "Alerts published to Kafka and acknowledged",
                s.alerts_published,
            ),
        ] {
            out.family(name, "counter", help);
            out.sample(name, none, value as f64);
        }
        for (name, help, value) in [
            (
                "riskstream_last_batch_id",
                "Id of the last committed batch",
                s.last_batch_id as f64,
            ),
            (
                "riskstream_input_rows_per_second",
                "Records arriving per second, over the last batch",
                s.input_rows_per_second,
            ),
            (
                "riskstream_processed_rows_per_second",
                "Records processed per second of the last batch",
                s.processed_rows_per_second,
            ),
            (
                "riskstream_state_rows",
                "Rows kept in state (rolling-window history, open aggregates)",
                s.state_rows as f64,
            ),
            (
                "riskstream_state_bytes",
                "Memory used by state",
                s.state_bytes as f64,
            ),
        ] {
            out.family(name, "gauge", help);
            out.sample(name, none, value);
        }
        if let Some(watermark) = s.watermark_ms {
            let name = "riskstream_watermark_delay_seconds";
            out.family(name, "gauge", "Now minus the event-time watermark");
            let now = chrono::Utc::now().timestamp_millis();
            out.sample(name, none, (now - watermark) as f64 / 1000.0);
        }
        let name = "riskstream_partition_lag_records";
        out.family(
            name,
            "gauge",
            "Latest offset minus the offset read up to, per partition",
        );
        for ((topic, partition), lag) in &s.lag {
            out.sample(
                name,
                &[("topic", topic.as_str()), ("partition", partition.as_str())],
                *lag as f64,
            );
        }
        out.histogram(
            "riskstream_batch_duration_seconds",
            "Duration of a micro-batch, from planning to its commit record",
            &s.batch_duration,
        );
        out.histogram(
            "riskstream_delta_commit_seconds",
            "Time to commit a batch to its Delta tables",
            &s.commit_duration,
        );
        if s.scores.count > 0 {
            out.histogram("riskstream_risk_score", "Risk scores written", &s.scores);
        }
        for (name, help, counts) in [
            (
                "riskstream_scores_total",
                "Scores written, per severity",
                &s.severity,
            ),
            (
                "riskstream_alerts_total",
                "Alerts selected, per severity (table and topic)",
                &s.alerts,
            ),
        ] {
            out.family(name, "counter", help);
            for (tier, n) in counts {
                out.sample(name, &[("severity", tier.as_str())], *n as f64);
            }
        }
        let name = "riskstream_table_version";
        out.family(
            name,
            "gauge",
            "Delta version of the job's tables at their last commit",
        );
        for (table, version) in &s.table_versions {
            out.sample(name, &[("table", table.as_str())], *version as f64);
        }
        out.text
    }
}

impl Exporter for JobMetrics {
    fn render(&self) -> String {
        self.render_job()
    }

    fn ready(&self) -> bool {
        self.state().ready
    }
}

/// The Flight SQL server's metrics: statements by outcome, rows sent, fetch durations.
#[derive(Debug)]
pub struct ServerMetrics {
    name: String,
    stats: Arc<QueryStats>,
}

impl ServerMetrics {
    /// Metrics of the server `name` (the `job` label) from its figures.
    pub fn new(name: &str, stats: Arc<QueryStats>) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            stats,
        })
    }
}

impl Exporter for ServerMetrics {
    fn render(&self) -> String {
        let s = self.stats.snapshot();
        let mut out = Exposition::new(&self.name);
        let name = "riskstream_flight_queries_total";
        out.family(
            name,
            "counter",
            "Flight SQL statements whose fetch ended, by outcome",
        );
        for outcome in [Outcome::Ok, Outcome::Error, Outcome::Cancelled] {
            let n = s.queries.get(outcome.as_str()).copied().unwrap_or(0);
            out.sample(name, &[("outcome", outcome.as_str())], n as f64);
        }
        let name = "riskstream_flight_rows_total";
        out.family(name, "counter", "Rows sent to Flight SQL clients");
        out.sample(name, &[], s.rows as f64);
        let name = "riskstream_flight_queries_running";
        out.family(name, "gauge", "Flight SQL fetches running now");
        out.sample(name, &[], s.running as f64);
        let histogram = Histogram {
            bounds: QUERY_SECONDS_BOUNDS.to_vec(),
            count: s.duration_counts.iter().sum(),
            counts: s.duration_counts,
            sum: s.duration_sum,
        };
        out.histogram(
            "riskstream_flight_query_duration_seconds",
            "Time from a statement's first batch asked for to its last sent",
            &histogram,
        );
        out.text
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Prometheus's text format, every sample labelled with the job.
struct Exposition {
    job: String,
    text: String,
}

impl Exposition {
    fn new(job: &str) -> Self {
        Self {
            job: escape(job),
            text: String::new(),
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}.");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.text, "{name}{{job=\"{}\"", self.job);
        for (k, v) in labels {
            let _ = write!(self.text, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.text, "}} {}", number(value));
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, n) in h.bounds.iter().zip(&h.counts) {
            cumulative += n;
            self.sample(&bucket, &[("le", &number(*bound))], cumulative as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], h.count as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], h.count as f64);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value as Prometheus writes it.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

/// Serves `/metrics`, `/healthz` (the process answers) and `/readyz` (the exporter is ready: a
/// job's query has started) on `addr`, in the background. Returns the address bound (port 0
/// picks one).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<dyn Exporter>,
) -> Result<SocketAddr, CommandError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness))
        .with_state(metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("metrics server stopped: {e}");
        }
    });
    Ok(bound)
}

async fn metrics_page(State(metrics): State<Arc<dyn Exporter>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn readiness(State(metrics): State<Arc<dyn Exporter>>) -> impl IntoResponse {
    if metrics.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let mut h = Histogram::new(&[0.5, 1.0]);
        for v in [0.25, 0.5, 0.75, 3.0] {
            h.observe(v);
        }
        let mut out = Exposition::new("a \"job\"\n");
        out.histogram("x_seconds", "X", &h);
        assert_eq!(
            out.text,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{job=\"a \\\"job\\\"\\n\",le=\"0.5\"} 2\n\
             x_seconds_bucket{job=\"a \\\"job\\\"\\n\",le=\"1\"} 3\n\
             x_seconds_bucket{job=\"a \\\"job\\\"\\n\",le=\"+Inf\"} 4\n\
             x_seconds_sum{job=\"a \\\"job\\\"\\n\"} 4.5\n\
             x_seconds_count{job=\"a \\\"job\\\"\\n\"} 4\n"
        );
    }

    #[test]
    fn a_job_is_ready_once_started() {
        let metrics = JobMetrics::new("j");
        assert!(!metrics.ready());
        assert!(metrics.render().contains("riskstream_up{job=\"j\"} 0\n"));
        metrics.start();
        assert!(metrics.ready());
        assert!(metrics.render().contains("riskstream_up{job=\"j\"} 1\n"));
    }
}
