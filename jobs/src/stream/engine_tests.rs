//! The runner over an in-process log: triggers, stops, exactly-once writes and watermarks,
//! without a broker.

#![expect(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{JobError, Result};
use crate::kafka::{OffsetRange, PartitionRecords};
use crate::stream::offsets::PartitionWatermarks;
use crate::stream::runner::{RunOptions, run_with};
use crate::stream::source::tests::log;
use crate::stream::source::{MemorySource, RecordSource};
use crate::stream::spec::{JobSpec, Trigger};

/// The in-process log, watched: counts how often the runner looks at the log ends, and, when
/// told to, lets only the first read through and makes every later one wait for records that
/// never come, until it is cancelled.
struct Watched {
    inner: MemorySource,
    looks: Arc<AtomicUsize>,
    stall_after_first_read: bool,
    reads: AtomicUsize,
    saw_cancel: Arc<AtomicBool>,
}

impl Watched {
    fn new(inner: MemorySource) -> Self {
        Self {
            inner,
            looks: Arc::new(AtomicUsize::new(0)),
            stall_after_first_read: false,
            reads: AtomicUsize::new(0),
            saw_cancel: Arc::new(AtomicBool::new(false)),
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

/// The same job with `query` lines added to its `[query]` section.
fn spec_with(dir: &Path, trigger: &str, query: &str) -> JobSpec {
    let sql = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../sql/scoring/transactions.sql"
    );
    let text = format!(
        r#"
name = "engine-test"
[readStream]
format = "kafka"
[readStream.options]
"kafka.bootstrap.servers" = "127.0.0.1:9"
subscribe = "financial-transactions"
startingOffsets = "earliest"
maxOffsetsPerTrigger = 3000
[query]
schema = "transactions"
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
    let options = RunOptions {
        trigger: spec.trigger,
        spec,
        partitions: None,
        stop,
    };
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
    let options = || RunOptions {
        spec: spec.clone(),
        trigger: Trigger::AvailableNow,
        partitions: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let first = run_with(options(), log(10_000), |_| {}).await.unwrap();
    assert_eq!(first.input_rows, 10_000);
    assert!(first.batches >= 4, "maxOffsetsPerTrigger bounds batches");
    assert!(first.dead_letter_rows > 0, "the generator corrupts 0.5%");
    assert_eq!(first.output_rows + first.dead_letter_rows, 10_000);
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
    let options = RunOptions {
        trigger: spec.trigger,
        spec,
        partitions: None,
        stop: Arc::clone(&stop),
    };
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

/// `(batch_id, event_time)` of every row of a table, by running `sql` over the lake in `dir`.
async fn batch_times(dir: &Path, sql: &str) -> Vec<(i64, i64, Option<i64>)> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    let ctx = crate::scoring::session().unwrap();
    let lake = riskstream_lake::LakeLocation::parse(dir.to_str().unwrap()).unwrap();
    riskstream_lake::Catalog::new(lake)
        .register_all(&ctx)
        .await
        .unwrap();
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
async fn rows_behind_the_watermark_go_to_late_events_and_the_watermark_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Generated transactions: 0.5% arrive 2 to 30 minutes late, 5% up to 30 s out of order. With
    // a one-minute delay, the late ones are behind the watermark and the out-of-order ones not.
    let spec = spec_with(
        dir.path(),
        "",
        r#"watermark = { column = "event_time", delay = "1 minute" }"#,
    );
    let options = || RunOptions {
        spec: spec.clone(),
        trigger: Trigger::AvailableNow,
        partitions: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
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
        let expected = chrono::DateTime::from_timestamp_millis(watermark[b])
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        assert_eq!(r["eventTime"]["watermark"], expected.as_str());
    }
    assert_eq!(counted as usize, late.len());
}
