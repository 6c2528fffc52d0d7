//! The runner over an in-process log: triggers, stops, exactly-once writes and watermarks,
//! without a broker.

#![expect(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use datafusion::common::ScalarValue;

use crate::error::{JobError, Result};
use crate::generator::Source;
use crate::kafka::{OffsetRange, PartitionRecords};
use crate::stream::offsets::PartitionWatermarks;
use crate::stream::runner::{RunOptions, run_with};
use crate::stream::source::tests::log;
use crate::stream::source::{MemorySource, RecordSource};
use crate::stream::spec::{JobSpec, Trigger};

/// The declared schema (and view) name of `source`'s events.
fn view_of(source: Source) -> &'static str {
    match source {
        Source::Transactions => "transactions",
        Source::Claims => "claims",
        Source::Telemetry => "telemetry",
    }
}

/// The in-process log, watched: counts how often the runner looks at the log ends, and, when
/// told to, lets only the first read through and makes every later one wait for records that
/// never come, until it is cancelled.
struct Watched {
    inner: MemorySource,
    looks: Arc<AtomicUsize>,
    stall_after_first_read: bool,
    reads: AtomicUsize,
    saw_cancel: Arc<AtomicBool>,
    /// Set on the first read, when given: a stop asked while the first batch is read.
    stop_on_first_read: Option<Arc<AtomicBool>>,
}

impl Watched {
    fn new(inner: MemorySource) -> Self {
        Self {
            inner,
            looks: Arc::new(AtomicUsize::new(0)),
            stall_after_first_read: false,
            reads: AtomicUsize::new(0),
            saw_cancel: Arc::new(AtomicBool::new(false)),
            stop_on_first_read: None,
        }
    }
}

impl RecordSource for Watched {
    fn description(&self) -> String {
        self.inner.description()
    }
    fn partitions(&self) -> Result<BTreeMap<String, Vec<i32>>> {
        self.inner.partitions()
    }
    fn watermarks(&self, partitions: &BTreeMap<String, Vec<i32>>) -> Result<PartitionWatermarks> {
        self.looks.fetch_add(1, Ordering::SeqCst);
        self.inner.watermarks(partitions)
    }
    fn read<T: Send>(
        &self,
        ranges: &[OffsetRange],
        finish: &(dyn Fn(PartitionRecords) -> Result<T> + Sync),
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<T>> {
        if let Some(stop) = &self.stop_on_first_read {
            stop.store(true, Ordering::SeqCst);
        }
        if !self.stall_after_first_read || self.reads.fetch_add(1, Ordering::SeqCst) == 0 {
            return self.inner.read(ranges, finish, cancelled);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(60) {
            if cancelled() {
                self.saw_cancel.store(true, Ordering::SeqCst);
                return Err(JobError::Cancelled);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(JobError::internal("the read was never cancelled".into()))
    }
}

/// The transactions scoring job over `dir`, with `trigger` (a TOML line) if given.
fn spec(dir: &Path, trigger: &str) -> JobSpec {
    spec_with(dir, trigger, "")
}

/// A per-event score of transactions with no state and no model: what the engine tests need
/// of a query (the shipped scoring SQL is tested through its spec below).
const PER_EVENT_SQL: &str = "SELECT event_id, 'transaction' AS event_type, user_id AS entity_id, \
     event_time, amount / 10000.0 AS risk_score, risk_severity(amount / 10000.0) AS severity \
     FROM transactions";

/// The same job with `query` lines added to its `[query]` section.
fn spec_with(dir: &Path, trigger: &str, query: &str) -> JobSpec {
    let sql = dir.join("per_event.sql");
    std::fs::write(&sql, PER_EVENT_SQL).unwrap();
    spec_for(dir, trigger, query, &sql, 3000)
}

/// A transactions job over `dir` running `sql`, with `query` lines added to its `[query]`
/// section and `max` records per batch.
fn spec_for(dir: &Path, trigger: &str, query: &str, sql: &Path, max: u64) -> JobSpec {
    spec_of(Source::Transactions, dir, trigger, query, sql, max)
}

/// A job over `source`'s topic and declared schema, otherwise as [`spec_for`].
fn spec_of(
    source: Source,
    dir: &Path,
    trigger: &str,
    query: &str,
    sql: &Path,
    max: u64,
) -> JobSpec {
    let sql = sql.display();
    let (topic, schema) = (source.topic(), view_of(source));
    let text = format!(
        r#"
name = "engine-test"
[readStream]
format = "kafka"
[readStream.options]
"kafka.bootstrap.servers" = "127.0.0.1:9"
subscribe = "{topic}"
startingOffsets = "earliest"
maxOffsetsPerTrigger = {max}
[query]
schema = "{schema}"
file = "{sql}"
{query}
[writeStream]
format = "delta"
{trigger}
[writeStream.options]
path = "{lake}/risk_scores"
checkpointLocation = "{lake}/checkpoints"
batchIdColumn = "batch_id"
"#,
        lake = dir.display()
    );
    JobSpec::parse(Path::new("engine-test.toml"), &text).unwrap()
}

/// A run of `spec` on its own trigger, stopped by `stop`.
fn on_its_trigger(spec: JobSpec, stop: Arc<AtomicBool>) -> RunOptions {
    RunOptions {
        trigger: spec.trigger,
        spec,
        partitions: None,
        stop,
    }
}

/// A run of `spec` up to the log ends it sees at start.
fn available_now(spec: &JobSpec) -> RunOptions {
    RunOptions {
        spec: spec.clone(),
        trigger: Trigger::AvailableNow,
        partitions: None,
        stop: Arc::new(AtomicBool::new(false)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_scores_with_its_specs_rule_weights_and_severity_tiers() {
    use datafusion::arrow::array::AsArray;
    let dir = tempfile::tempdir().unwrap();
    let sql = dir.path().join("rules.sql");
    // Only `high_amount` (the sixth rule) can fire.
    std::fs::write(
        &sql,
        "SELECT event_id, r['score'] AS risk_score, risk_severity(r['score']) AS severity FROM \
         (SELECT *, transaction_rules(false, false, false, false, false, amount >= 0, false, \
         false, false, false, false, false) AS r FROM transactions)",
    )
    .unwrap();
    let mut spec = spec_for(dir.path(), "", "", &sql, 3000);
    spec.rule_sets[0].rules[5].weight = 0.55;
    spec.severity.high = 0.5;
    let options = RunOptions {
        spec,
        trigger: Trigger::AvailableNow,
        partitions: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    run_with(options, log(500), |_| {}).await.unwrap();
    let rows = lake_session(dir.path())
        .await
        .sql("SELECT DISTINCT risk_score, severity FROM risk_scores")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows[0].num_rows(), 1);
    let score = rows[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    let severity = datafusion::arrow::compute::cast(
        rows[0].column(1),
        &datafusion::arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    assert_eq!(score.value(0), 0.55);
    assert_eq!(severity.as_string::<i32>().value(0), "high");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_processing_time_query_looks_for_records_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), r#"trigger = { processingTime = "250ms" }"#);
    let stop = Arc::new(AtomicBool::new(false));
    let source = Watched::new(log(1_000));
    let looks = Arc::clone(&source.looks);
    let stopper = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let options = on_its_trigger(spec, stop);
    let summary = run_with(options, source, |_| {}).await.unwrap();
    stopper.await.unwrap();
    assert_eq!(summary.input_rows, 1_000);
    // About 1.5 s / 250 ms triggers, each looking once, plus the look at start; looking for
    // records every 50 ms while idle would look about 30 times.
    let looks = looks.load(Ordering::SeqCst);
    assert!(looks <= 9, "looked {looks} times in 1.5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_writes_every_record_of_an_in_process_log_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "");
    let options = || available_now(&spec);
    let first = run_with(options(), log(10_000), |_| {}).await.unwrap();
    assert_eq!(first.input_rows, 10_000);
    assert!(first.batches >= 4, "maxOffsetsPerTrigger bounds batches");
    assert!(first.dead_letter_rows > 0, "the generator corrupts 0.5%");
    assert_eq!(first.output_rows + first.dead_letter_rows, 10_000);
    // Each batch's processing rate counts only its own share of the run: with the backlog the
    // next batch is read and run while the last commits, and rates over whole batches would
    // add up to more time than the batches took from the first's start to the last's commit.
    let (mut shares, mut first_start, mut last_commit) = (0.0, f64::MAX, 0.0f64);
    for entry in std::fs::read_dir(dir.path().join("checkpoints/progress")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        let started = chrono::DateTime::parse_from_rfc3339(report["timestamp"].as_str().unwrap())
            .unwrap()
            .timestamp_millis() as f64
            / 1e3;
        let took = report["durationMs"]["triggerExecution"].as_f64().unwrap() / 1e3;
        first_start = first_start.min(started);
        last_commit = last_commit.max(started + took);
        let rows = report["numInputRows"].as_f64().unwrap();
        if rows > 0.0 {
            shares += rows / report["processedRowsPerSecond"].as_f64().unwrap();
        }
    }
    // Times in the reports are in whole milliseconds.
    let batches_took = last_commit - first_start + 0.003;
    assert!(
        shares <= batches_took,
        "the batches' shares add up to {shares} s, the batches took {batches_took} s"
    );
    // The same log again: the checkpoint says everything was read, so nothing is written.
    let again = run_with(options(), log(10_000), |_| {}).await.unwrap();
    assert_eq!((again.batches, again.output_rows), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_commits_the_batch_in_flight_and_gives_up_the_next_ones_read() {
    let dir = tempfile::tempdir().unwrap();
    // No trigger, and a backlog (3,000 records per batch of 10,000): the next batch is read
    // while the first commits.
    let spec = spec(dir.path(), "");
    let mut source = Watched::new(log(10_000));
    source.stall_after_first_read = true;
    let saw_cancel = Arc::clone(&source.saw_cancel);
    let stop = Arc::new(AtomicBool::new(false));
    let options = on_its_trigger(spec, Arc::clone(&stop));
    let summary = run_with(options, source, |_| stop.store(true, Ordering::SeqCst))
        .await
        .unwrap();
    assert_eq!(summary.batches, 1);
    assert!(summary.input_rows > 0 && summary.input_rows <= 3_000);
    assert!(dir.path().join("checkpoints/commits/0").exists());
    // The next batch's read gave up when the runner left, rather than holding it up.
    assert!(saw_cancel.load(Ordering::SeqCst));
    assert!(!dir.path().join("checkpoints/offsets/1").exists());
}

/// A stop asked while a batch is read, with no batch committing: the batch's offsets are
/// logged before its SQL, and it commits before the run ends (as in Spark: every offsets entry
/// has its commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_batch_whose_offsets_are_logged_commits_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "");
    let stop = Arc::new(AtomicBool::new(false));
    let mut source = Watched::new(log(10_000));
    source.stop_on_first_read = Some(Arc::clone(&stop));
    let options = on_its_trigger(spec, stop);
    let summary = run_with(options, source, |_| {}).await.unwrap();
    assert_eq!(summary.batches, 1);
    let names = |folder: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("checkpoints").join(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("offsets"), ["0"]);
    assert_eq!(names("commits"), ["0"]);
}

/// A batch commits while the next one runs its SQL. When the commit fails (here its commit
/// record cannot be written: a folder stands where it goes), the run ends with the error, the
/// batch after it has written nothing, not even its offsets, and a restart replays the failed
/// batch and writes every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_leaves_the_next_batch_unwritten_and_a_restart_writes_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), "");
    let options = || available_now(&spec);
    let blocked = dir.path().join("checkpoints/commits/1");
    std::fs::create_dir_all(blocked.join("in-the-way")).unwrap();
    let mut reported = Vec::new();
    let err = run_with(options(), log(10_000), |p| reported.push(p.batch_id))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("commits/1"), "{err}");
    assert_eq!(reported, [0]);
    let checkpoint = dir.path().join("checkpoints");
    assert!(checkpoint.join("offsets/1").exists());
    assert!(!checkpoint.join("offsets/2").exists());
    assert!(!checkpoint.join("progress/1").exists());

    std::fs::remove_dir_all(&blocked).unwrap();
    let again = run_with(options(), log(10_000), |_| {}).await.unwrap();
    assert_eq!(again.replayed_batches, 1);
    let ctx = lake_session(dir.path()).await;
    let counts = integers(
        &ctx,
        "SELECT (SELECT count(*) FROM risk_scores) AS n, \
         (SELECT count(DISTINCT event_id) FROM risk_scores) AS ids, \
         (SELECT count(*) FROM dead_letters) AS dead",
    )
    .await;
    let (rows, ids, dead) = (counts[0], counts[1], counts[2]);
    assert_eq!(rows, ids, "a row written twice");
    assert_eq!(rows + dead, 10_000);
}

/// A session with every table of the lake in `dir`.
async fn lake_session(dir: &Path) -> datafusion::prelude::SessionContext {
    let ctx = crate::scoring::session().unwrap();
    let lake = riskstream_lake::LakeLocation::parse(dir.to_str().unwrap()).unwrap();
    riskstream_lake::Catalog::new(lake)
        .register_all(&ctx)
        .await
        .unwrap();
    ctx
}

/// The integers of the first row `sql` gives in `ctx` (counts and the like).
async fn integers(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Vec<i64> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    out[0]
        .columns()
        .iter()
        .map(|c| c.as_primitive::<Int64Type>().value(0))
        .collect()
}

/// `(batch_id, event_time)` of every row of a table, by running `sql` over the lake in `dir`.
async fn batch_times(dir: &Path, sql: &str) -> Vec<(i64, i64, Option<i64>)> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    let ctx = lake_session(dir).await;
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in batches {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let times = b.column(1).as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            let missed = (b.num_columns() > 2).then(|| {
                b.column(2)
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(i)
            });
            out.push((ids.value(i), times.value(i), missed));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_scores_with_the_registry_champion_and_its_challenger_in_shadow() {
    use crate::stream::models::tests::{promote, publish_model};
    use riskstream_lake::ModelRole;

    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    publish_model(&lake, "1", &["amount", "account_age_days"], 5).await;
    publish_model(&lake, "2", &["amount", "account_age_days"], 9).await;
    promote(&lake, "1", ModelRole::Champion).await;
    promote(&lake, "2", ModelRole::Challenger).await;
    let sql = dir.path().join("score.sql");
    std::fs::write(
        &sql,
        "SELECT event_id, 'transaction' AS event_type, m['score'] AS risk_score, \
                m['model_version'] AS model_version, c['model_version'] AS shadow_version, \
                c['score'] AS shadow_score \
         FROM (SELECT *, fraud(amount, account_age_days) AS m, \
                         fraud_challenger(amount, account_age_days) AS c FROM transactions)",
    )
    .unwrap();
    let models = format!(
        "[[models]]\nfunction = \"fraud\"\nlake = \"{}\"\nname = \"tx\"\nshadow = true",
        lake.display()
    );
    let spec = spec_for(dir.path(), "", &models, &sql, 1000);
    let options = RunOptions {
        spec,
        trigger: Trigger::AvailableNow,
        partitions: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let summary = run_with(options, log(3_000), |_| {}).await.unwrap();
    assert!(summary.output_rows > 2_900);
    let ctx = lake_session(dir.path()).await;
    let out = ctx
        .sql(
            "SELECT model_version, shadow_version, count(*) AS n, \
                    sum(CASE WHEN risk_score <> shadow_score THEN 1 ELSE 0 END) AS differ \
             FROM risk_scores GROUP BY 1, 2",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].num_rows(), 1, "one champion, one challenger");
    let text = |c: usize| {
        let column = datafusion::arrow::compute::cast(
            out[0].column(c),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        column.as_string::<i32>().value(0).to_string()
    };
    assert_eq!((text(0), text(1)), ("tx/1".to_string(), "tx/2".to_string()));
    assert_eq!(
        out[0].column(2).as_primitive::<Int64Type>().value(0) as u64,
        summary.output_rows
    );
    assert!(
        out[0].column(3).as_primitive::<Int64Type>().value(0) > 0,
        "the two versions score differently"
    );

    // A spec naming a model with no champion fails before reading anything, naming the key.
    let models = format!(
        "[[models]]\nfunction = \"fraud\"\nlake = \"{}\"\nname = \"claims\"",
        lake.display()
    );
    let spec = spec_for(&dir.path().join("other"), "", &models, &sql, 1000);
    let options = RunOptions {
        spec,
        trigger: Trigger::AvailableNow,
        partitions: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let err = run_with(options, log(10), |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("models[0].name") && err.contains("no champion"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_behind_the_watermark_go_to_late_events_and_the_watermark_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Generated transactions: 0.5% arrive 2 to 30 minutes late, 5% up to 30 s out of order. With
    // a one-minute delay, the late ones are behind the watermark and the out-of-order ones not.
    let spec = spec_with(
        dir.path(),
        "",
        r#"watermark = { column = "event_time", delay = "1 minute" }"#,
    );
    let options = || available_now(&spec);
    let mut reports = Vec::new();
    // The first 8,000 events, then the log grows to 20,000 and the job restarts from its
    // checkpoint: the watermark must carry on, not start again from nothing.
    let first = run_with(options(), log(8_000), |p| reports.push(p.to_json()))
        .await
        .unwrap();
    let second = run_with(options(), log(20_000), |p| reports.push(p.to_json()))
        .await
        .unwrap();
    assert!(first.batches >= 2 && second.batches >= 4);

    let scored = batch_times(dir.path(), "SELECT batch_id, event_time FROM risk_scores").await;
    let late = batch_times(
        dir.path(),
        "SELECT batch_id, event_time, watermark FROM late_events",
    )
    .await;
    let dead = first.dead_letter_rows + second.dead_letter_rows;
    assert_eq!(scored.len() + late.len() + dead as usize, 20_000);
    assert!(late.len() > 20, "{} late rows", late.len());

    // The watermark of each batch, worked out from the rows themselves: the latest event time of
    // the batches before it, minus a minute, never going back.
    let batches = 1 + scored.iter().chain(&late).map(|r| r.0).max().unwrap();
    let mut latest = vec![i64::MIN; batches as usize];
    for (b, t, _) in scored.iter().chain(&late) {
        latest[*b as usize] = latest[*b as usize].max(*t);
    }
    let mut watermark = vec![0i64; batches as usize];
    for b in 1..batches as usize {
        let candidate = latest[b - 1].div_euclid(1000) - 60_000;
        watermark[b] = watermark[b - 1].max(candidate);
    }
    assert!(watermark[batches as usize - 1] > 0);
    for (b, t, _) in &scored {
        assert!(
            *t > watermark[*b as usize] * 1000,
            "on-time row of batch {b} is behind"
        );
    }
    for (b, t, missed) in &late {
        assert!(
            *t <= watermark[*b as usize] * 1000,
            "late row of batch {b} is not behind"
        );
        assert_eq!(*missed, Some(watermark[*b as usize] * 1000));
    }
    // The query reads four columns and the decoder builds only those; late rows are whole.
    late_rows_are_whole(dir.path(), &log(20_000), late.len()).await;
    let first_after_restart = first.batches as usize;
    assert!(
        late.iter()
            .any(|(b, _, _)| *b as usize == first_after_restart),
        "the first batch after the restart has late rows only if the watermark carried over"
    );

    // Progress counts them and reports the watermark, as Spark formats it.
    let mut counted = 0;
    for r in &reports {
        let b = r["batchId"].as_i64().unwrap() as usize;
        let op = &r["stateOperators"][0];
        counted += op["numRowsDroppedByWatermark"].as_u64().unwrap();
        assert!(
            op["commitTimeMs"].is_u64(),
            "Spark's name for the state's commit time"
        );
        let expected = chrono::DateTime::from_timestamp_millis(watermark[b])
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        assert_eq!(r["eventTime"]["watermark"], expected.as_str());
    }
    assert_eq!(counted as usize, late.len());
}

/// Every `late_events` row in `dir` holds its event's every declared column, as the whole
/// decoding of the `log` it came from gives them.
async fn late_rows_are_whole(dir: &Path, log: &MemorySource, expected: usize) {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;
    let declared = crate::schemas::source_schema(Source::Transactions);
    let decoder = crate::decode::JsonDecoder::new(Arc::clone(&declared)).unwrap();
    let mut events = std::collections::HashMap::new();
    for records in log.records() {
        let values = records.column_by_name("value").unwrap().as_binary::<i32>();
        for b in decoder.decode(values).unwrap().batches {
            let ids = b.column(0).as_string::<i32>();
            for i in 0..b.num_rows() {
                events.insert(ids.value(i).to_string(), b.slice(i, 1));
            }
        }
    }
    let ctx = lake_session(dir).await;
    let late = ctx.sql("SELECT * FROM late_events").await.unwrap();
    let mut seen = 0;
    for b in late.collect().await.unwrap() {
        for i in 0..b.num_rows() {
            let row = b.slice(i, 1);
            let id = cast(row.column_by_name("event_id").unwrap(), &DataType::Utf8).unwrap();
            let event = &events[id.as_string::<i32>().value(0)];
            for (field, whole) in declared.fields().iter().zip(event.columns()) {
                let kept = cast(row.column_by_name(field.name()).unwrap(), field.data_type());
                assert_eq!(&kept.unwrap(), whole, "late_events.{}", field.name());
            }
            seen += 1;
        }
    }
    assert_eq!(seen, expected);
}

/// Rolling features of transactions: per user and per card, over frames of different lengths.
/// Four rolling features, up to an hour back (the rolling benchmark's SQL).
const ROLLING_SQL: &str = include_str!("../../../bench/rolling_features.sql");

/// The query lines giving the view the Kafka columns the shipped SQL reads, as the shipped specs
/// do.
const METADATA: &str = r#"metadata = { topic = "source_topic", partition = "source_partition", offset = "source_offset" }"#;

/// A dense stream of `source` events: few users, policies and devices, 5 events per second of
/// event time, so frames hold several events per key, and 20,000 events span more than an hour,
/// so every frame's history is also evicted.
fn dense_config_of(source: Source, out_of_order: bool) -> crate::generator::GeneratorConfig {
    let mut config =
        crate::generator::GeneratorConfig::new(11, 1_767_225_600_000).with_sources(&[source]);
    config.events_per_second = 5.0;
    config.entities.users = 300;
    config.entities.policies = 300;
    config.entities.devices = 100;
    if !out_of_order {
        config.out_of_order_rate = 0.0;
        config.late_rate = 0.0;
    }
    config
}

fn dense_log_of(source: Source, events: u64, out_of_order: bool) -> MemorySource {
    MemorySource::generate(
        source.topic(),
        source.partitions(),
        dense_config_of(source, out_of_order),
        events,
    )
    .unwrap()
}

type Features = std::collections::HashMap<String, (i64, i64, f64, f64, f64)>;

/// `event_id` -> (event time, then the features) of a table or query output.
fn features(batches: &[datafusion::arrow::array::RecordBatch]) -> Features {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    let mut out = Features::new();
    for b in batches {
        let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
        // Tables read back give text as Utf8View.
        let ids = datafusion::arrow::compute::cast(
            &col("event_id"),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let ids = ids.as_string::<i32>();
        let times = col("event_time");
        let times = times.as_primitive::<TimestampMicrosecondType>();
        // The generic variant's sums are decimals, its maximum single precision.
        let double = |name: &str| {
            datafusion::arrow::compute::cast(
                &col(name),
                &datafusion::arrow::datatypes::DataType::Float64,
            )
            .unwrap()
        };
        let (n, sum, avg, max) = (
            col("user_txn_5m"),
            double("user_amount_1h"),
            double("user_avg_10m"),
            double("card_max_2m"),
        );
        for i in 0..b.num_rows() {
            out.insert(
                ids.value(i).to_string(),
                (
                    times.value(i),
                    n.as_primitive::<Int64Type>().value(i),
                    sum.as_primitive::<Float64Type>().value(i),
                    avg.as_primitive::<Float64Type>().value(i),
                    max.as_primitive::<Float64Type>().value(i),
                ),
            );
        }
    }
    out
}

/// The rolling SQL run once, as a batch, over every event of the log that decodes, except
/// `late` ones.
async fn batch_features(
    sql: &str,
    events: u64,
    out_of_order: bool,
    late: &std::collections::HashSet<String>,
) -> Features {
    features(&batch_rows(sql, events, out_of_order, late).await)
}

/// The output of `sql` run once, as a batch, over every event of the log that decodes, except
/// `late` ones.
async fn batch_rows(
    sql: &str,
    events: u64,
    out_of_order: bool,
    late: &std::collections::HashSet<String>,
) -> Vec<datafusion::arrow::array::RecordBatch> {
    batch_rows_of(Source::Transactions, sql, events, out_of_order, &|id| {
        !late.contains(id)
    })
    .await
}

/// The same over `source`'s events, of those the events `keep` takes.
async fn batch_rows_of(
    source: Source,
    sql: &str,
    events: u64,
    out_of_order: bool,
    keep: &dyn Fn(&str) -> bool,
) -> Vec<datafusion::arrow::array::RecordBatch> {
    use crate::generator::{Generator, Message, Stream};
    use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray};
    let mut generator = Generator::new(dense_config_of(source, out_of_order)).unwrap();
    let mut values = Vec::new();
    let mut msg = Message::default();
    while (values.len() as u64) < events {
        generator.next_message(&mut msg);
        if let Some(Stream::Events(_)) = msg.stream {
            values.push(msg.value.clone());
        }
    }
    let decoder = crate::decode::JsonDecoder::new(crate::schemas::source_schema(source)).unwrap();
    let decoded = decoder
        .decode(&BinaryArray::from_iter_values(
            values.iter().map(Vec::as_slice),
        ))
        .unwrap();
    // Where the stream reads each event: the same log's records, through the metadata columns.
    let spec = spec_of(
        source,
        Path::new("/x"),
        "",
        METADATA,
        Path::new(FEATURES_SQL),
        1,
    );
    let with_metadata = crate::decode::RecordDecoder::new(
        crate::schemas::source_schema(source),
        spec.query
            .metadata
            .iter()
            .map(|m| m.kafka.clone())
            .collect(),
        spec.query.input_schema(),
    )
    .unwrap();
    let mut position = std::collections::HashMap::new();
    for records in dense_log_of(source, events, out_of_order).records() {
        for b in with_metadata.decode(records, 0, 0, 0).unwrap().rows {
            let ids = b.column(0).as_string::<i32>();
            let at = b.num_columns() - 3;
            for i in 0..b.num_rows() {
                let row: Vec<ArrayRef> = (at..at + 3).map(|c| b.column(c).slice(i, 1)).collect();
                position.insert(ids.value(i).to_string(), row);
            }
        }
    }
    let mut rows = Vec::new();
    for b in decoded.batches {
        let ids = b.column(0).as_string::<i32>();
        let keep: datafusion::arrow::array::BooleanArray = (0..b.num_rows())
            .map(|i| Some(keep(ids.value(i))))
            .collect();
        let b = datafusion::arrow::compute::filter_record_batch(&b, &keep).unwrap();
        let ids = b.column(0).as_string::<i32>();
        let mut columns = b.columns().to_vec();
        let mut parts: Vec<Vec<&dyn Array>> = vec![Vec::new(); 3];
        for i in 0..b.num_rows() {
            for (part, value) in parts.iter_mut().zip(&position[ids.value(i)]) {
                part.push(value.as_ref());
            }
        }
        for part in parts {
            columns.push(datafusion::arrow::compute::concat(&part).unwrap());
        }
        rows.push(
            datafusion::arrow::array::RecordBatch::try_new(spec.query.input_schema(), columns)
                .unwrap(),
        );
    }
    let ctx = crate::scoring::session().unwrap();
    let table = datafusion::datasource::MemTable::try_new(rows[0].schema(), vec![rows]).unwrap();
    ctx.register_table(view_of(source), Arc::new(table))
        .unwrap();
    ctx.sql(&riskstream_udfs::spark_sql(sql))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

/// Runs the rolling job over `dir` in the given runs (each an in-process log, a prefix of the
/// next), `max` records per batch; returns the emitted features, the late event ids and the
/// watermark after the last batch.
async fn stream_features(
    dir: &Path,
    query: &str,
    runs: &[u64],
    out_of_order: bool,
    max: u64,
) -> (Features, std::collections::HashSet<String>, i64, String) {
    let (rows, late, watermark, operator) =
        stream_rows(dir, query, runs, out_of_order, max, "").await;
    (features(&rows), late, watermark, operator)
}

/// The rows a job wrote, the ids of its late events, its last watermark and its state operator.
type Streamed = (
    Vec<datafusion::arrow::array::RecordBatch>,
    std::collections::HashSet<String>,
    i64,
    String,
);

/// The rows the job wrote (with `write` lines in its `[writeStream]`), with the late event ids,
/// the last watermark and the state operator.
async fn stream_rows(
    dir: &Path,
    query: &str,
    runs: &[u64],
    out_of_order: bool,
    max: u64,
    write: &str,
) -> Streamed {
    stream_rows_of(
        Source::Transactions,
        dir,
        query,
        runs,
        out_of_order,
        max,
        write,
        "",
    )
    .await
}

/// The same over `source`'s events, with `emit` lines added to `[query]`.
#[allow(clippy::too_many_arguments)]
async fn stream_rows_of(
    source: Source,
    dir: &Path,
    query: &str,
    runs: &[u64],
    out_of_order: bool,
    max: u64,
    write: &str,
    emit: &str,
) -> Streamed {
    use datafusion::arrow::array::AsArray;
    let sql = dir.join("rolling.sql");
    std::fs::write(&sql, query).unwrap();
    // Ten minutes: partitions read in one batch can be a minute or more apart in event time at
    // this rate, and events from a lagging partition must not count as late.
    let spec = spec_of(
        source,
        dir,
        write,
        &format!("watermark = {{ column = \"event_time\", delay = \"10 minutes\" }}\n{emit}"),
        &sql,
        max,
    );
    let mut batches = 0;
    let mut operator = String::new();
    for &events in runs {
        let options = RunOptions {
            spec: spec.clone(),
            trigger: Trigger::AvailableNow,
            partitions: None,
            stop: Arc::new(AtomicBool::new(false)),
        };
        batches += run_with(options, dense_log_of(source, events, out_of_order), |p| {
            operator = p.state_operators[0].operator_name.clone();
        })
        .await
        .unwrap()
        .batches;
    }
    let ctx = lake_session(dir).await;
    let emitted = ctx
        .sql("SELECT * FROM risk_scores")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut late = std::collections::HashSet::new();
    if ctx.table_exist("late_events").unwrap() {
        for b in ctx
            .sql("SELECT event_id FROM late_events")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
        {
            let ids = datafusion::arrow::compute::cast(
                b.column(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            for id in ids.as_string::<i32>().iter().flatten() {
                late.insert(id.to_string());
            }
        }
    }
    let checkpoint =
        crate::stream::checkpoint::Checkpoint::open(dir.join("checkpoints").to_str().unwrap())
            .unwrap();
    let watermark = checkpoint
        .next_watermark(batches as i64 - 1)
        .await
        .unwrap()
        .unwrap();
    (emitted, late, watermark, operator)
}

/// `sql` streamed over 20,000 events out of order, with a restart after 9,000, runs on `path`
/// and equals the same SQL run once over the whole input; the batch's features and the late
/// events it left out.
async fn streamed_equals_batch(
    sql: &str,
    path: &str,
) -> (Features, std::collections::HashSet<String>) {
    let dir = tempfile::tempdir().unwrap();
    let (streamed, late, watermark, operator) =
        stream_features(dir.path(), sql, &[9_000, 20_000], true, 2_500).await;
    assert_eq!(operator, path, "{sql}");
    let batch = batch_features(sql, 20_000, true, &late).await;
    assert_same(&streamed, &batch, watermark);
    (batch, late)
}

/// The streamed features equal the batch ones, event for event; and the events streamed are
/// exactly those the final watermark has passed.
fn assert_same(streamed: &Features, batch: &Features, watermark_ms: i64) {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let due: Vec<&String> = batch
        .iter()
        .filter(|(_, f)| f.0 <= watermark_ms * 1000)
        .map(|(id, _)| id)
        .collect();
    assert!(due.len() > 1000, "{} events due", due.len());
    assert_eq!(
        streamed.len(),
        due.len(),
        "emitted exactly the events behind the watermark"
    );
    for id in due {
        let (s, b) = (&streamed[id], &batch[id]);
        assert_eq!((s.0, s.1), (b.0, b.1), "{id}: count");
        assert!(
            close(s.2, b.2) && close(s.3, b.3) && close(s.4, b.4),
            "{id}: {s:?} != {b:?}"
        );
    }
}

/// The same features over argument types the incremental path does not keep (decimals, single
/// precision), so DataFusion's window operator evaluates them over the kept rows.
fn generic_sql() -> String {
    ROLLING_SQL
        .replace("COUNT(*)", "COUNT(CAST(amount AS REAL))")
        .replace("SUM(amount)", "SUM(CAST(amount AS DECIMAL(12, 2)))")
        .replace("AVG(amount)", "AVG(CAST(amount AS DECIMAL(12, 2)))")
        .replace("MAX(amount)", "MAX(CAST(amount AS REAL))")
}

/// The same with one function (the hour's sum) in that form: the engine evaluates the others,
/// and DataFusion's operator that one over their output and the kept rows.
fn mixed_sql() -> String {
    ROLLING_SQL.replace("SUM(amount)", "SUM(CAST(amount AS DECIMAL(12, 2)))")
}

/// Every path, the incremental one, the generic one and the two mixed, over the same stream.
fn paths() -> [(String, &'static str); 3] {
    [
        (ROLLING_SQL.to_string(), "incrementalWindows"),
        (generic_sql(), "windows"),
        (mixed_sql(), "mixedWindows"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_features_over_a_stream_equal_the_same_sql_over_the_whole_input() {
    for (sql, path) in paths() {
        for (out_of_order, max) in [(false, 2_500), (true, 700), (true, 9_000)] {
            let dir = tempfile::tempdir().unwrap();
            let (streamed, late, watermark, operator) =
                stream_features(dir.path(), &sql, &[20_000], out_of_order, max).await;
            assert_eq!(operator, path);
            assert_eq!(late.is_empty(), !out_of_order);
            let batch = batch_features(&sql, 20_000, out_of_order, &late).await;
            assert_same(&streamed, &batch, watermark);
        }
    }
}

/// Rolling features with a WHERE below their windows (which picks the rows the frames hold) on
/// every path, across restarts and out-of-order input: the streamed features equal the same SQL
/// over the whole input, for the rows the WHERE keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_features_over_the_rows_a_where_keeps_equal_the_same_sql_over_the_whole_input() {
    for (sql, path) in paths() {
        let sql = format!(
            "{}\nWHERE amount >= 20 AND channel <> 'atm'",
            sql.trim_end()
        );
        let dir = tempfile::tempdir().unwrap();
        let (streamed, late, watermark, operator) =
            stream_features(dir.path(), &sql, &[6_000, 13_000, 20_000], true, 2_000).await;
        assert_eq!(operator, path, "{sql}");
        let batch = batch_features(&sql, 20_000, true, &late).await;
        assert_same(&streamed, &batch, watermark);
        let everything = batch_features(ROLLING_SQL, 20_000, true, &late).await;
        assert!(batch.len() < everything.len(), "the WHERE keeps fewer rows");
    }
}

/// Rolling features over the stream under an alias (`FROM transactions t`, columns named
/// `t.amount`), through a CTE (passing it whole, or computing columns), or partitioned by keys
/// computed from the row, stay on their path (the incremental one, where that is the query's),
/// as the same SQL over the whole input gives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_features_over_an_alias_or_a_cte_of_the_stream_equal_the_same_sql_over_the_whole_input()
 {
    for (sql, path) in paths() {
        let aliased = sql
            .replace(
                "FROM transactions",
                "FROM transactions t WHERE t.amount >= 20",
            )
            .replace("PARTITION BY user_id", "PARTITION BY t.user_id")
            .replace("(amount", "(t.amount");
        let cte = format!(
            "WITH x AS (SELECT * FROM transactions) {}",
            sql.replace("FROM transactions", "FROM x")
        );
        // A CTE keeping some columns and computing one (under the name of the column it
        // replaces), and a WHERE over the computed one.
        let computed = format!(
            "WITH x AS (SELECT event_id, user_id, card_id, event_time, amount * 2 AS amount \
             FROM transactions) {}",
            sql.replace("FROM transactions", "FROM x WHERE amount > 40")
        );
        // Partition keys computed from the row: in the window, and by the CTE (ten cards to a
        // key: the id but its last digit).
        let keyed = sql
            .replace("PARTITION BY user_id", "PARTITION BY upper(user_id)")
            .replace(
                "PARTITION BY card_id",
                "PARTITION BY substr(card_id, 1, length(card_id) - 1)",
            );
        let keyed_cte = format!(
            "WITH x AS (SELECT *, substr(card_id, 1, length(card_id) - 1) AS cards FROM \
             transactions) {}",
            sql.replace("FROM transactions", "FROM x")
                .replace("PARTITION BY card_id", "PARTITION BY cards")
        );
        for sql in [aliased, cte, computed, keyed, keyed_cte] {
            streamed_equals_batch(&sql, path).await;
        }
    }
}

/// A weight per merchant category, beside the stream.
const WEIGHTS: &str = "WITH weights AS (SELECT * FROM (VALUES ('grocery', 0.5), \
    ('electronics', 2.0), ('airlines', 3.0), ('fuel', NULL)) AS w(merchant_category, weight))";

/// `sql` over the stream joined with a table beside it (a VALUES list here, a `[query] tables`
/// table in a job), by `join` ("JOIN" or "LEFT JOIN"): a weight per merchant category, which
/// the sums, means and maxima multiply amounts by (a category without one, by 1), and the
/// card maxima are partitioned by the table's own `merchant_category` too, a name both sides
/// have.
fn over_a_join(sql: &str, join: &str) -> String {
    let weighted = "amount * coalesce(m.weight, 1.0)";
    format!(
        "{WEIGHTS} {}",
        sql.replace(
            "FROM transactions",
            &format!(
                "FROM transactions t {join} weights m ON t.merchant_category = m.merchant_category"
            ),
        )
        .replace("amount)", &format!("{weighted})"))
        .replace("amount AS ", &format!("{weighted} AS "))
        .replace(
            "PARTITION BY card_id",
            "PARTITION BY card_id, m.merchant_category"
        )
    )
}

/// Rolling features over a join of the stream with a table beside it (inner; left outer,
/// where events of categories the table lacks keep nulls; anti, dropping the events the table
/// matches), or over the rows a WHERE reading
/// subqueries keeps: each event's rows are made as it arrives, and on every path, across
/// restarts and out-of-order input, the streamed features equal the same SQL over the whole
/// input; the incremental path stays incremental.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_features_over_a_join_with_a_table_beside_the_stream_equal_the_same_sql_over_the_whole_input()
 {
    for (sql, path) in paths() {
        let by_subquery = format!(
            "{}\nWHERE merchant_category NOT IN (SELECT c FROM (VALUES ('grocery'), ('fuel')) \
             AS x(c)) AND amount > (SELECT 10.0)",
            sql.trim_end()
        );
        for join in ["JOIN", "LEFT JOIN", "LEFT ANTI JOIN", "WHERE"] {
            let sql = match join {
                "WHERE" => by_subquery.clone(),
                // The events of a category weighed above 1 dropped, as an anti join drops them.
                "LEFT ANTI JOIN" => format!(
                    "{WEIGHTS} {}",
                    sql.replace(
                        "FROM transactions",
                        "FROM transactions t LEFT ANTI JOIN weights m \
                         ON t.merchant_category = m.merchant_category AND m.weight > 1.0"
                    )
                ),
                _ => over_a_join(&sql, join),
            };
            let (batch, late) = streamed_equals_batch(&sql, path).await;
            let everything = batch_features(ROLLING_SQL, 20_000, true, &late).await;
            if join != "LEFT JOIN" {
                assert!(batch.len() < everything.len(), "{join} keeps fewer events");
            } else {
                assert_eq!(
                    batch.len(),
                    everything.len(),
                    "the outer join keeps every event"
                );
            }
        }
    }
}

/// `sql`'s features joined with a GROUP BY of rows read beside the stream (a VALUES list here,
/// a `[query] tables` table in a job): the grouped rows are computed whole every batch, and
/// one of them (0.625) is added to every event's two-minute maximum, `window_first` choosing whether
/// the windows are computed before the join or over its rows.
fn beside_grouped_rows(sql: &str, window_first: bool) -> String {
    let grouped = "bump AS (SELECT k, SUM(v) AS v FROM (VALUES ('a', 0.125), ('a', 0.5), \
                   ('b', 7.0)) AS s(k, v) GROUP BY k)";
    if window_first {
        format!(
            "WITH features AS ({sql}), {grouped} \
             SELECT f.event_id, f.user_id, f.event_time, f.amount, f.user_txn_5m, \
             f.user_amount_1h, f.user_avg_10m, f.card_max_2m + b.v AS card_max_2m \
             FROM features f JOIN bump b ON b.k = 'a'"
        )
    } else {
        // The maximum's argument reads the grouped rows: the windows run over the join.
        let over_join = sql
            .replace(
                "FROM transactions",
                "FROM transactions JOIN bump b ON b.k = 'a'",
            )
            .replace("MAX(amount)", "MAX(amount + b.v)")
            .replace(
                "MAX(CAST(amount AS REAL))",
                "MAX(CAST(amount + b.v AS REAL))",
            );
        format!("WITH {grouped} {over_join}")
    }
}

/// A GROUP BY over rows beside the stream (not over the stream's rows) runs next to rolling
/// features on every path, and below them: the streamed features equal the same SQL over the
/// whole input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_features_beside_a_grouped_table_equal_the_same_sql_over_the_whole_input() {
    for (sql, path) in paths() {
        for window_first in [true, false] {
            let sql = beside_grouped_rows(&sql, window_first);
            let dir = tempfile::tempdir().unwrap();
            let (streamed, late, watermark, operator) =
                stream_features(dir.path(), &sql, &[20_000], true, 3_000).await;
            // Over the join, on the path they take over the stream: it runs as events arrive.
            assert_eq!(operator, path, "{sql}");
            let batch = batch_features(&sql, 20_000, true, &late).await;
            assert_same(&streamed, &batch, watermark);
            // The group's sum was added once to each maximum of amounts in cents: a half cent
            // more, and an eighth. (The other paths take the maximum in single precision.)
            if operator == "incrementalWindows" {
                let bumped = |max: f64| (max * 1000.0).round() as i64 % 10 == 5;
                assert!(streamed.values().all(|f| bumped(f.4)), "{sql}");
            }
        }
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_features_after_a_restart_equal_those_without_one() {
    for (sql, path) in paths() {
        let dir = tempfile::tempdir().unwrap();
        // Stop after 6,000 events, restart over the grown log twice: history and pending events
        // come back from the state snapshot.
        let (streamed, late, watermark, operator) =
            stream_features(dir.path(), &sql, &[6_000, 13_000, 20_000], true, 2_000).await;
        assert_eq!(operator, path);
        if path != "windows" {
            // The histories hold more events than a batch adds: snapshots go on in deltas, and
            // the restarts read chains of them. (A mixed snapshot's incremental part starts
            // after its own format and length, 14 bytes in.)
            let deltas = std::fs::read_dir(dir.path().join("checkpoints/state"))
                .unwrap()
                .map(|f| std::fs::read(f.unwrap().path()).unwrap())
                .filter(|b| b.starts_with(b"RSDLT") || b.get(14..19) == Some(b"RSDLT"))
                .count();
            assert!(deltas >= 3, "{path}: {deltas} deltas");
        }
        let batch = batch_features(&sql, 20_000, true, &late).await;
        assert_same(&streamed, &batch, watermark);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_features_on_arrival_equal_the_sql_over_the_events_received_by_their_batch() {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    for (out_of_order, max) in [(false, 2_500), (true, 1_700)] {
        let dir = tempfile::tempdir().unwrap();
        // With a restart: out-of-order events must come back in place from the snapshots.
        let (rows, late, _, operator) = stream_rows_of(
            Source::Transactions,
            dir.path(),
            ROLLING_SQL,
            &[6_000, 14_000],
            out_of_order,
            max,
            "",
            r#"emit = "onArrival""#,
        )
        .await;
        assert_eq!(operator, "incrementalWindows");
        let streamed = features(&rows);
        // Every on-time event is written in the batch it arrived in.
        let mut batch_of = std::collections::HashMap::new();
        for b in &rows {
            let ids = datafusion::arrow::compute::cast(
                b.column(b.schema().index_of("event_id").unwrap()),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let batches = b.column(b.schema().index_of("batch_id").unwrap());
            for (id, batch) in ids
                .as_string::<i32>()
                .iter()
                .zip(batches.as_primitive::<Int64Type>().iter())
            {
                batch_of.insert(id.unwrap().to_string(), batch.unwrap());
            }
        }
        let all = batch_features(ROLLING_SQL, 14_000, out_of_order, &late).await;
        assert_eq!(streamed.len(), all.len(), "every on-time event, once");
        assert_eq!(late.is_empty(), !out_of_order);
        let last = batch_of.values().copied().max().unwrap();
        assert!(last >= 5, "{last} batches");
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
        let mut differ_from_final = 0;
        for batch in 0..=last {
            // Each event's features: the SQL over the events received up to its batch.
            let received = features(
                &batch_rows_of(
                    Source::Transactions,
                    ROLLING_SQL,
                    14_000,
                    out_of_order,
                    &|id| batch_of.get(id).is_some_and(|&b| b <= batch),
                )
                .await,
            );
            let same = |s: &(i64, i64, f64, f64, f64), b: &(i64, i64, f64, f64, f64)| {
                (s.0, s.1) == (b.0, b.1) && close(s.2, b.2) && close(s.3, b.3) && close(s.4, b.4)
            };
            for (id, _) in batch_of.iter().filter(|(_, b)| **b == batch) {
                let (s, b) = (&streamed[id], &received[id]);
                assert!(same(s, b), "{id}: {s:?} != {b:?}");
                differ_from_final += usize::from(!same(s, &all[id]));
            }
        }
        // In order, that is also the SQL over the whole input; out of order, an event that
        // arrived later but happened earlier is missing from some frames.
        assert_eq!(differ_from_final == 0, !out_of_order, "{differ_from_final}");
    }
}

/// The transaction features shipped in `sql/features/transactions.sql`.
const FEATURES_SQL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../sql/features/transactions.sql"
);

/// Every output row by event id: its values, text as Utf8 (tables read back give Utf8View).
fn rows_by_id(
    batches: &[datafusion::arrow::array::RecordBatch],
) -> std::collections::HashMap<String, Vec<datafusion::common::ScalarValue>> {
    use datafusion::arrow::datatypes::DataType;
    let mut out = std::collections::HashMap::new();
    for b in batches {
        // The job adds the batch id; the SQL alone does not.
        let columns: Vec<_> = b
            .columns()
            .iter()
            .zip(b.schema().fields())
            .filter(|(_, f)| f.name() != "batch_id")
            .map(|(c, _)| match c.data_type() {
                DataType::Utf8View => datafusion::arrow::compute::cast(c, &DataType::Utf8).unwrap(),
                _ => Arc::clone(c),
            })
            .collect();
        let id_at = 0; // event_id, the file's first column
        for row in 0..b.num_rows() {
            let values: Vec<ScalarValue> = columns
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row).unwrap())
                .collect();
            let ScalarValue::Utf8(Some(id)) = &values[id_at] else {
                unreachable!()
            };
            out.insert(id.clone(), values);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_transaction_features_stream_as_they_compute_in_one_batch() {
    shipped_features_stream_as_they_compute_in_one_batch(
        Source::Transactions,
        FEATURES_SQL,
        300_000,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_claim_features_stream_as_they_compute_in_one_batch() {
    let sql = concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/features/claims.sql");
    shipped_features_stream_as_they_compute_in_one_batch(Source::Claims, sql, 200_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_telemetry_features_stream_as_they_compute_in_one_batch() {
    let sql = concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/features/telemetry.sql");
    shipped_features_stream_as_they_compute_in_one_batch(Source::Telemetry, sql, 200_000).await;
}

/// The feature file `path` over a stream of `source` events, restarted once, gives every event
/// behind the watermark the values the same SQL gives over the whole input (at least `values`
/// of them compared).
async fn shipped_features_stream_as_they_compute_in_one_batch(
    source: Source,
    path: &str,
    values: usize,
) {
    let sql = std::fs::read_to_string(path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (streamed, late, watermark, operator) = stream_rows_of(
        source,
        dir.path(),
        &sql,
        &[7_000, 20_000],
        true,
        1_500,
        "",
        METADATA,
    )
    .await;
    assert_eq!(
        operator, "incrementalWindows",
        "every window of {path} is incremental"
    );
    let batch = batch_rows_of(source, &sql, 20_000, true, &|id| !late.contains(id)).await;
    let (streamed, batch) = (rows_by_id(&streamed), rows_by_id(&batch));
    let time_at = batch
        .values()
        .next()
        .unwrap()
        .iter()
        .position(|v| matches!(v, ScalarValue::TimestampMicrosecond(..)))
        .unwrap();
    let due: Vec<&String> = batch
        .iter()
        .filter(|(_, v)| matches!(v[time_at], ScalarValue::TimestampMicrosecond(Some(t), _) if t <= watermark * 1000))
        .map(|(id, _)| id)
        .collect();
    assert!(due.len() > 10_000, "{} due", due.len());
    assert_eq!(streamed.len(), due.len());
    // A deviation over equal readings is exactly 0 here; DataFusion's sliding variance, which
    // retracts rows as the frame moves, leaves rounding noise in the batch run (about 1e-5 for
    // readings near 700, or NaN, the square root of a variance a hair below 0).
    let close = |a: f64, b: f64| {
        (a.is_nan() && b.is_nan())
            || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            || (a == 0.0 && (b.is_nan() || b.abs() < 1e-4))
    };
    let compared: usize = due
        .into_iter()
        .map(|id| assert_same_values(id, &streamed[id], &batch[id], close))
        .sum();
    assert!(compared > values, "{compared} values compared");
}

/// Asserts that event `id`'s streamed values are its values from the batch run, doubles
/// compared by `close`; returns how many values were compared.
pub(super) fn assert_same_values(
    id: impl std::fmt::Debug,
    streamed: &[ScalarValue],
    batch: &[ScalarValue],
    close: impl Fn(f64, f64) -> bool,
) -> usize {
    assert_eq!(streamed.len(), batch.len(), "{id:?}");
    for (x, y) in streamed.iter().zip(batch) {
        let same = match (x, y) {
            (ScalarValue::Float64(Some(x)), ScalarValue::Float64(Some(y))) => close(*x, *y),
            _ => x == y,
        };
        assert!(same, "{id:?}: {x:?} != {y:?}\n{streamed:?}\n{batch:?}");
    }
    streamed.len()
}

/// A shipped spec, its lake and checkpoints moved under `dir`.
fn shipped_spec(name: &str, dir: &Path) -> JobSpec {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let text = std::fs::read_to_string(format!("{root}/jobs/specs/{name}"))
        .unwrap()
        .replace(
            "${RISKSTREAM_LAKE:-./lake-data}",
            &dir.join("lake").display().to_string(),
        )
        .replace(
            "${RISKSTREAM_CHECKPOINTS:-./checkpoints}",
            &dir.join("checkpoints").display().to_string(),
        )
        .replace("\"sql/", &format!("\"{root}/sql/"))
        .replace("\"jobs/models/", &format!("\"{root}/jobs/models/"));
    JobSpec::parse(Path::new(name), &text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_feature_jobs_write_one_row_of_features_per_event_behind_the_watermark() {
    for (spec, source, table) in [
        (
            "transaction_features.toml",
            Source::Transactions,
            "transaction_features",
        ),
        ("claim_features.toml", Source::Claims, "claim_features"),
        (
            "telemetry_features.toml",
            Source::Telemetry,
            "telemetry_features",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = RunOptions {
            trigger: Trigger::AvailableNow,
            spec: shipped_spec(spec, dir.path()),
            partitions: None,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let mut operator = String::new();
        // 5,000 events over about 17 minutes of event time: most are behind the one-minute
        // watermark by the end.
        let summary = run_with(options, dense_log_of(source, 5_000, true), |p| {
            operator = p.state_operators[0].operator_name.clone();
        })
        .await
        .unwrap();
        assert_eq!(operator, "incrementalWindows", "{spec}");
        assert!(summary.output_rows > 1_000, "{spec}: {summary:?}");
        let ctx = lake_session(&dir.path().join("lake")).await;
        let counts = integers(
            &ctx,
            &format!("SELECT count(*), count(DISTINCT event_id) FROM {table}"),
        )
        .await;
        let value = |i: usize| counts[i];
        assert_eq!(value(0), value(1), "{spec}: one row per event");
        assert_eq!(value(0) as u64, summary.output_rows, "{spec}");
    }
}

/// The shipped scoring jobs' automated response: an entity is put on the blocklist by the score
/// that matched `[block] where`, in that score's batch, and every later score of it (and only
/// those) carries the reason `blocked_entity`, read back from the table the job appends to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_entity_is_blocked_by_its_score_and_its_later_events_say_so() {
    for (spec, source, event_type) in [
        ("transactions.toml", Source::Transactions, "transaction"),
        ("claims.toml", Source::Claims, "claim"),
        ("telemetry.toml", Source::Telemetry, "telemetry"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = shipped_spec(spec, dir.path());
        spec.alerts = None; // no broker here
        spec.source.max_offsets_per_trigger = Some(1_000);
        // A lower bar than the shipped one, so that generated events block enough entities.
        let filter = "risk_score >= 0.3 AND NOT array_has(reasons, 'blocked_entity')";
        spec.block.as_mut().unwrap().filter = filter.into();
        let options = RunOptions {
            trigger: Trigger::AvailableNow,
            spec,
            partitions: None,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let mut operator = String::new();
        let summary = run_with(options, dense_log_of(source, 8_000, false), |p| {
            operator = p.state_operators[0].operator_name.clone();
        })
        .await
        .unwrap();
        assert_eq!(operator, "incrementalWindows", "{event_type}");
        assert!(summary.batches >= 8, "{event_type}: {summary:?}");
        let ctx = lake_session(&dir.path().join("lake")).await;
        let count = |sql: String| {
            let ctx = ctx.clone();
            async move { integers(&ctx, &sql).await[0] }
        };
        let blocks = format!(
            "(SELECT entity_id, min(batch_id) AS blocked_in, count(DISTINCT batch_id) AS batches \
             FROM blocked_entities WHERE event_type = '{event_type}' GROUP BY entity_id)"
        );
        let scores = format!("(SELECT * FROM risk_scores WHERE event_type = '{event_type}')");
        let blocked = count(format!("SELECT count(*) FROM {blocks}")).await;
        assert!(blocked >= 3, "{event_type}: {blocked} entities blocked");
        // One row per matching score, all in the batch that first blocked the entity.
        assert_eq!(
            count(format!("SELECT count(*) FROM {scores} WHERE {filter}")).await,
            count(format!(
                "SELECT count(*) FROM blocked_entities WHERE event_type = '{event_type}'"
            ))
            .await,
            "{event_type}"
        );
        assert_eq!(
            count(format!("SELECT count(*) FROM {blocks} WHERE batches > 1")).await,
            0
        );
        let flagged = "array_has(s.reasons, 'blocked_entity')";
        let later = count(format!(
            "SELECT count(*) FROM {scores} s JOIN {blocks} b ON s.entity_id = b.entity_id \
             WHERE s.batch_id > b.blocked_in AND {flagged}"
        ))
        .await;
        assert!(
            later > 0,
            "{event_type}: no later events of blocked entities"
        );
        for wrong in [
            format!(
                "SELECT count(*) FROM {scores} s JOIN {blocks} b ON s.entity_id = b.entity_id \
                 WHERE s.batch_id > b.blocked_in AND NOT {flagged}"
            ),
            format!(
                "SELECT count(*) FROM {scores} s JOIN {blocks} b ON s.entity_id = b.entity_id \
                 WHERE s.batch_id <= b.blocked_in AND {flagged}"
            ),
            format!(
                "SELECT count(*) FROM {scores} s WHERE {flagged} \
                 AND s.entity_id NOT IN (SELECT entity_id FROM {blocks})"
            ),
        ] {
            assert_eq!(count(wrong.clone()).await, 0, "{event_type}: {wrong}");
        }
    }
}

/// A batch replayed after a crash reads the blocklist as its first run did, even though the first
/// run's own blocks were committed before the crash: it computes the same scores (so it would
/// publish the same alerts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_reads_the_blocklist_its_first_run_read() {
    // 1,000 records per batch: the last batch is a full one.
    const EVENTS: u64 = 5_967;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = shipped_spec("transactions.toml", dir.path());
    spec.alerts = None;
    spec.source.max_offsets_per_trigger = Some(1_000);
    spec.block.as_mut().unwrap().filter =
        "risk_score >= 0.3 AND NOT array_has(reasons, 'blocked_entity')".into();
    let options = |spec: &JobSpec| RunOptions {
        trigger: Trigger::AvailableNow,
        spec: spec.clone(),
        partitions: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let mut first = Vec::new();
    run_with(
        options(&spec),
        dense_log_of(Source::Transactions, EVENTS, false),
        |p| first.push(p.clone()),
    )
    .await
    .unwrap();
    let last = first.last().unwrap().clone();
    assert!(last.batch_id >= 4);
    // The last batch blocked entities: a replay reading the table as it is now would see them.
    let blocked_in_last = last.sink.table_versions.contains_key("blockedEntities");
    assert!(blocked_in_last, "{:?}", last.sink.table_versions);
    // A crash after the batch's tables committed, before its commit record.
    let checkpoint = dir.path().join("checkpoints/score-transactions");
    std::fs::remove_file(checkpoint.join(format!("commits/{}", last.batch_id))).unwrap();
    let mut again = Vec::new();
    run_with(
        options(&spec),
        dense_log_of(Source::Transactions, EVENTS, false),
        |p| again.push(p.clone()),
    )
    .await
    .unwrap();
    assert_eq!(again.len(), 1);
    let replay = &again[0];
    assert!(replay.replayed);
    assert_eq!(replay.batch_id, last.batch_id);
    assert_eq!(replay.scores, last.scores);
}

/// A table the SQL reads must exist (only the job's own blocklist is created), and the blocklist
/// needs the columns it copies: both fail at start, naming their key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tables_and_blocklist_columns_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sql");
    std::fs::write(
        &path,
        "SELECT event_id, user_id AS entity_id FROM transactions",
    )
    .unwrap();
    let lake = dir.path().join("lake").display().to_string();
    let block = crate::stream::spec::BlockSpec {
        filter: "true".into(),
        path: format!("{lake}/blocked"),
    };
    for (query, block, key) in [
        (
            format!(r#"tables = [{{ name = "blocked", path = "{lake}/nope" }}]"#),
            None,
            "query.tables[0].path",
        ),
        // No event_type, severity...: nothing to copy into the blocklist.
        (String::new(), Some(block), "block.where"),
    ] {
        let mut spec = spec_of(Source::Transactions, dir.path(), "", &query, &path, 100);
        spec.block = block;
        let err = start_error(spec).await;
        assert!(err.contains(key), "{key}: {err}");
    }
}

/// Counts and amounts per user in ten-minute windows sliding by five, as Spark's docs write
/// them (`window.start` names the grouped window): the aggregation benchmark's SQL.
const SLIDING_SQL: &str = include_str!("../../../bench/windowed_spend.sql");

/// The same per user session: a user's events less than 90 seconds apart (this stream has one
/// per user about every minute, so sessions both chain and break).
const SESSION_SQL: &str = "
SELECT user_id, session_window.start AS window_start, session_window.end AS window_end,
  COUNT(*) AS transactions, SUM(amount) AS spend, MAX(amount) AS largest,
  AVG(amount) AS average, MIN(amount) AS smallest
FROM transactions
GROUP BY user_id, session_window(event_time, '90 seconds')
";

/// The same with a gap per row, as Spark takes an expression: large amounts close a session
/// sooner, and the smallest (a gap of 0) are in none.
const DYNAMIC_SESSION_SQL: &str = "
SELECT user_id, session_window.start AS window_start, session_window.end AS window_end,
  COUNT(*) AS transactions, SUM(amount) AS spend, MAX(amount) AS largest,
  AVG(amount) AS average, MIN(amount) AS smallest
FROM transactions
GROUP BY user_id, session_window(event_time,
  CASE WHEN amount < 2 THEN '0 seconds' WHEN amount > 100 THEN '40 seconds' ELSE '2 minutes' END)
";

/// A window's end, count, total, maximum, average and minimum, and the batch that wrote it (if
/// any).
type WindowRow = (i64, i64, f64, f64, f64, f64, Option<i64>);

/// (user, window start) -> every row written for that window.
type Windows = std::collections::HashMap<(String, i64), Vec<WindowRow>>;

fn windows_of(batches: &[datafusion::arrow::array::RecordBatch]) -> Windows {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{
        DataType, Float64Type, Int64Type, TimestampMicrosecondType,
    };
    let mut out = Windows::new();
    for b in batches {
        let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
        let users = datafusion::arrow::compute::cast(&col("user_id"), &DataType::Utf8).unwrap();
        let users = users.as_string::<i32>();
        let batch_ids = b
            .schema()
            .index_of("batch_id")
            .ok()
            .map(|i| b.column(i).as_primitive::<Int64Type>().clone());
        let (start, end, n, total, biggest, average, smallest) = (
            col("window_start"),
            col("window_end"),
            col("transactions"),
            col("spend"),
            col("largest"),
            col("average"),
            col("smallest"),
        );
        for i in 0..b.num_rows() {
            out.entry((
                users.value(i).to_string(),
                start.as_primitive::<TimestampMicrosecondType>().value(i),
            ))
            .or_default()
            .push((
                end.as_primitive::<TimestampMicrosecondType>().value(i),
                n.as_primitive::<Int64Type>().value(i),
                total.as_primitive::<Float64Type>().value(i),
                biggest.as_primitive::<Float64Type>().value(i),
                average.as_primitive::<Float64Type>().value(i),
                smallest.as_primitive::<Float64Type>().value(i),
                batch_ids.as_ref().map(|ids| ids.value(i)),
            ));
        }
    }
    out
}

/// The same window's values, batch ids aside, sums to rounding.
fn same_window(s: &WindowRow, b: &WindowRow) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    s.0 == b.0 && s.1 == b.1 && close(s.2, b.2) && s.3 == b.3 && close(s.4, b.4) && s.5 == b.5
}

/// `streamed` holds exactly the `expected` windows, each in one row with the expected values.
fn assert_written_once(streamed: &Windows, expected: Vec<(&(String, i64), &Vec<WindowRow>)>) {
    assert_eq!(streamed.len(), expected.len());
    for (key, b) in expected {
        let s = &streamed[key];
        assert_eq!(s.len(), 1, "{key:?} written once");
        assert!(same_window(&s[0], &b[0]), "{key:?}: {s:?} != {b:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_appended_over_a_stream_equal_the_same_sql_over_the_whole_input() {
    // Windows sliding by a slide that does not divide them, from an offset: one-minute panes,
    // three or four windows to each.
    let uneven = SLIDING_SQL.replace(
        "window(event_time, '10 minutes', '5 minutes')",
        "window(event_time, '10 minutes', '3 minutes', '1 minute')",
    );
    assert_ne!(uneven, SLIDING_SQL);
    // Spark's distinct count for streams (COUNT(DISTINCT) it refuses): no partial of it is
    // kept, so each window's rows are, until it is written. Event ids are unique, so it counts
    // the window's rows too.
    let sketched = SLIDING_SQL.replace(
        "COUNT(*) AS transactions",
        "approx_count_distinct(event_id) AS transactions",
    );
    assert_ne!(sketched, SLIDING_SQL);
    for sql in [
        SLIDING_SQL,
        uneven.as_str(),
        sketched.as_str(),
        SESSION_SQL,
        DYNAMIC_SESSION_SQL,
    ] {
        // In order and out of order, small and large batches, and with two restarts.
        for (runs, out_of_order, max) in [
            (&[20_000][..], false, 2_500),
            (&[20_000][..], true, 700),
            (&[6_000, 13_000, 20_000][..], true, 2_000),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (streamed, late, watermark, operator) =
                stream_rows(dir.path(), sql, runs, out_of_order, max, "").await;
            assert_eq!(operator, "stateStoreSave");
            assert_eq!(late.is_empty(), !out_of_order);
            let batch = windows_of(&batch_rows(sql, 20_000, out_of_order, &late).await);
            let streamed = windows_of(&streamed);
            // Append mode writes a window once, when the watermark passes its end: exactly the
            // windows the batch run has that ended by the last watermark.
            let due: Vec<_> = batch
                .iter()
                .filter(|(_, v)| v[0].0 <= watermark * 1000)
                .collect();
            assert!(due.len() > 1_000, "{} windows due", due.len());
            assert_written_once(&streamed, due);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_mode_writes_each_change_and_its_last_row_is_the_window_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let (streamed, late, _, operator) = stream_rows(
        dir.path(),
        SLIDING_SQL,
        &[20_000],
        true,
        1_000,
        r#"outputMode = "update""#,
    )
    .await;
    assert_eq!(operator, "stateStoreSave");
    let batch = windows_of(&batch_rows(SLIDING_SQL, 20_000, true, &late).await);
    let streamed = windows_of(&streamed);
    // Every window the input has was written, open ones too, and its latest row is its value
    // over the whole input.
    assert_eq!(streamed.len(), batch.len());
    let mut rewritten = 0;
    for (key, b) in &batch {
        let s = &streamed[key];
        let last = s.iter().max_by_key(|r| r.6).unwrap();
        assert!(same_window(last, &b[0]), "{key:?}: {s:?} != {b:?}");
        // Written again only in batches that changed it: each time with more rows.
        let mut by_batch = s.clone();
        by_batch.sort_by_key(|r| r.6);
        assert!(
            by_batch
                .windows(2)
                .all(|w| w[0].6 < w[1].6 && w[0].1 < w[1].1),
            "{s:?}"
        );
        rewritten += usize::from(s.len() > 1);
    }
    assert!(
        rewritten > 100,
        "{rewritten} windows changed in several batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_mode_replaces_the_table_with_every_window_each_batch() {
    // Partial aggregates per window, and the rows of open sessions, both across a restart.
    for sql in [SLIDING_SQL, SESSION_SQL] {
        let dir = tempfile::tempdir().unwrap();
        let (streamed, late, _, _) = stream_rows(
            dir.path(),
            sql,
            &[8_000, 12_000],
            true,
            1_500,
            r#"outputMode = "complete""#,
        )
        .await;
        let batch = windows_of(&batch_rows(sql, 12_000, true, &late).await);
        // The table holds one row per window: the last batch's.
        assert_written_once(&windows_of(&streamed), batch.iter().collect());
    }
}

#[test]
fn the_benchmark_jobs_are_valid_specs() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for name in ["rolling_features", "windowed_spend"] {
        let file = format!("{root}/bench/{name}.toml");
        // Its SQL file is named from the repository root, where the command runs.
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("\"bench/", &format!("\"{root}/bench/"));
        let spec = JobSpec::parse(Path::new(&file), &text).unwrap();
        assert_eq!(spec.sink.path, format!("./lake-data/bench_{name}"));
    }
}

/// The error a job over a few transactions stops with.
async fn start_error(spec: JobSpec) -> String {
    let options = RunOptions {
        spec,
        trigger: Trigger::AvailableNow,
        partitions: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    run_with(
        options,
        dense_log_of(Source::Transactions, 10, false),
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_modes_the_query_cannot_honour_are_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |sql: &'static str, write: &'static str| {
        let dir = dir.path().to_path_buf();
        async move {
            let path = dir.join("q.sql");
            std::fs::write(&path, sql).unwrap();
            let spec = spec_for(
                &dir,
                write,
                r#"watermark = { column = "event_time", delay = "1 minute" }"#,
                &path,
                100,
            );
            start_error(spec).await
        }
    };
    let err = run(
        "SELECT user_id, count(*) AS n FROM transactions GROUP BY user_id",
        "",
    )
    .await;
    assert!(
        err.contains("q.sql") && err.contains("append output mode"),
        "{err}"
    );
    let err = run(
        "SELECT user_id, count(*) AS n FROM transactions \
         GROUP BY user_id, window(event_time + INTERVAL '1' MINUTE, '1 minute')",
        "",
    )
    .await;
    assert!(err.contains("`event_time`"), "{err}");
    let err = run("SELECT * FROM transactions", r#"outputMode = "update""#).await;
    assert!(
        err.contains("writeStream.outputMode") && err.contains("GROUP BY"),
        "{err}"
    );
    // The stream's rows beside its aggregation: each batch would join the closing windows to
    // its own new rows only.
    let err = run(
        "SELECT t.* FROM transactions t JOIN (SELECT window(event_time, '1 minute') AS w, \
         MAX(amount) AS m FROM transactions GROUP BY window(event_time, '1 minute')) x \
         ON t.amount = x.m",
        "",
    )
    .await;
    assert!(
        err.contains("q.sql") && err.contains("only through its GROUP BY"),
        "{err}"
    );
    // A window function over the groups sees one batch's groups: it must take a window whole.
    let per_user = "SELECT user_id, n, MAX(n) OVER (PARTITION BY {by}) AS most FROM (\
         SELECT user_id, window.start AS start, COUNT(*) AS n FROM transactions \
         GROUP BY user_id, window(event_time, '1 minute'))";
    let err = run(per_user.replace("{by}", "user_id").leak(), "").await;
    assert!(
        err.contains("q.sql") && err.contains("PARTITION BY the GROUP BY's window()"),
        "{err}"
    );
    let err = run(
        per_user.replace("{by}", "start").leak(),
        r#"outputMode = "update""#,
    )
    .await;
    assert!(
        err.contains("update mode writes only changed groups"),
        "{err}"
    );
    // A LIMIT between the groups and the window function can split a window.
    let err = run(
        "SELECT user_id, n, MAX(n) OVER (PARTITION BY start) AS most FROM (\
         SELECT user_id, window.start AS start, COUNT(*) AS n FROM transactions \
         GROUP BY user_id, window(event_time, '1 minute') LIMIT 10)",
        "",
    )
    .await;
    assert!(
        err.contains("PARTITION BY the GROUP BY's window()"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_arrival_is_refused_naming_the_functions_left_to_the_generic_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.sql");
    std::fs::write(&path, mixed_sql()).unwrap();
    let spec = spec_for(
        dir.path(),
        "",
        "watermark = { column = \"event_time\", delay = \"1 minute\" }\nemit = \"onArrival\"",
        &path,
        100,
    );
    let err = start_error(spec).await;
    // The sum over decimals (its name leaves the cast out), not the functions the engine
    // evaluates beside it.
    assert!(
        err.contains("query.emit")
            && err.contains("sum(transactions.amount)")
            && !err.contains("count("),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_of_a_job_is_written_with_its_codec() {
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec_with(
        dir.path(),
        "",
        r#"watermark = { column = "event_time", delay = "1 minute" }"#,
    );
    spec.sink.compression = riskstream_lake::Codec::Snappy;
    let run = run_with(available_now(&spec), log(20_000), |_| {})
        .await
        .unwrap();
    assert!(run.dead_letter_rows > 0);
    for table in ["risk_scores", "dead_letters", "late_events"] {
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path().join(table)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "parquet") {
                continue;
            }
            files += 1;
            let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
            for group in reader.metadata().row_groups() {
                for column in group.columns() {
                    assert_eq!(column.compression(), Compression::SNAPPY, "{path:?}");
                }
            }
        }
        assert!(files > 0, "{table} has no files");
    }
}
