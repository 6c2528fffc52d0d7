//! Maintenance while a job appends: optimize loses and duplicates nothing, vacuum keeps what
//! time travel within the retention reads, and checkpoints come every checkpointInterval commits.

#![expect(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use riskstream_lake::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use riskstream_lake::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use riskstream_lake::datafusion::prelude::SessionContext;
use riskstream_lake::{
    Catalog, DeltaAppender, LakeLocation, LakeSchema, OptimizeOptions, TableSpec, TableVersion,
};

const BATCHES: i64 = 40;
const ROWS: i64 = 50;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
    ]))
}

fn batch(n: i64) -> RecordBatch {
    let ids = n * ROWS..(n + 1) * ROWS;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.map(|i| ["a", "b"][(i % 2) as usize]),
            )),
        ],
    )
    .unwrap()
}

async fn new_lake(
    checkpoint_interval: Option<u64>,
) -> (tempfile::TempDir, LakeLocation, DeltaAppender) {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    let spec = TableSpec {
        name: "events".into(),
        schema: schema(),
        partition_by: vec!["kind".into()],
        stats_columns: None,
        merge_schema: false,
        checkpoint_interval,
        compression: Default::default(),
    };
    let appender = DeltaAppender::open_or_create(&lake, spec).await.unwrap();
    (dir, lake, appender)
}

/// (rows, distinct ids) of the table at `version`, read through the lake schema.
async fn census(lake: &LakeLocation, version: TableVersion) -> (i64, i64) {
    let ctx = SessionContext::new();
    Catalog::new(lake.clone()).register_all(&ctx).await.unwrap();
    let name = version.table_name("events");
    let batches = ctx
        .sql(&format!(
            "SELECT count(*), count(DISTINCT id) FROM \"{name}\""
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let value = |c: usize| batches[0].column(c).as_primitive::<Int64Type>().value(0);
    (value(0), value(1))
}

async fn entry_and_table(lake: &LakeLocation) -> (LakeSchema, riskstream_lake::TableEntry) {
    let schema = LakeSchema::new(Catalog::new(lake.clone()));
    let entry = schema.entry("events").await.unwrap().expect("table exists");
    (schema, entry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_and_vacuum_while_a_job_appends_lose_and_double_nothing() {
    let (_dir, lake, mut appender) = new_lake(None).await;
    let writer = tokio::spawn(async move {
        for n in 0..BATCHES {
            appender.append(vec![batch(n)], "job", n).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        appender
    });
    let (schema, entry) = entry_and_table(&lake).await;
    let mut rewritten = 0;
    while !writer.is_finished() {
        let table = schema.load(&entry, TableVersion::Latest).await.unwrap();
        let report = riskstream_lake::optimize(&entry, table, &OptimizeOptions::default())
            .await
            .unwrap();
        rewritten += report.files_removed;
        // Vacuum between the job's commits: within the retention it deletes nothing.
        let table = schema.load(&entry, TableVersion::Latest).await.unwrap();
        let vacuumed =
            riskstream_lake::vacuum(&entry, table, Duration::from_secs(168 * 3600), false, false)
                .await
                .unwrap();
        assert!(vacuumed.files.is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut appender = writer.await.unwrap();
    // A replayed batch after the optimize is still recognised as written.
    let replay = appender.append(vec![batch(3)], "job", 3).await.unwrap();
    assert_eq!(replay, riskstream_lake::AppendOutcome::AlreadyCommitted);
    let table = schema.load(&entry, TableVersion::Latest).await.unwrap();
    rewritten += riskstream_lake::optimize(
        &entry,
        table,
        &OptimizeOptions {
            zorder_by: vec!["id".into()],
            ..OptimizeOptions::default()
        },
    )
    .await
    .unwrap()
    .files_removed;
    assert!(rewritten > 0, "optimize rewrote no file");
    assert_eq!(
        census(&lake, TableVersion::Latest).await,
        (BATCHES * ROWS, BATCHES * ROWS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_keeps_what_time_travel_within_retention_reads() {
    let (_dir, lake, mut appender) = new_lake(None).await;
    for n in 0..6 {
        appender.append(vec![batch(n)], "job", n).await.unwrap();
    }
    let (schema, entry) = entry_and_table(&lake).await;
    let table = schema.load(&entry, TableVersion::Latest).await.unwrap();
    let optimized = riskstream_lake::optimize(&entry, table, &OptimizeOptions::default())
        .await
        .unwrap();
    assert!(optimized.files_removed > 0);
    let before_optimize = TableVersion::Version(6);
    assert_eq!(census(&lake, before_optimize).await, (6 * ROWS, 6 * ROWS));

    // The files optimize replaced were removed seconds ago: a week's retention keeps them.
    let table = schema.load(&entry, TableVersion::Latest).await.unwrap();
    let kept =
        riskstream_lake::vacuum(&entry, table, Duration::from_secs(168 * 3600), false, false)
            .await
            .unwrap();
    assert!(kept.files.is_empty(), "{:?}", kept.files);
    assert_eq!(census(&lake, before_optimize).await, (6 * ROWS, 6 * ROWS));

    // Shorter than the table's retention: refused without --force, naming the way out.
    let table = schema.load(&entry, TableVersion::Latest).await.unwrap();
    let err = riskstream_lake::vacuum(&entry, table, Duration::ZERO, false, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");

    // Forced to zero, a dry run lists the replaced files and deletes none of them.
    let table = schema.load(&entry, TableVersion::Latest).await.unwrap();
    let dry = riskstream_lake::vacuum(&entry, table, Duration::ZERO, true, true)
        .await
        .unwrap();
    assert_eq!(dry.files.len() as u64, optimized.files_removed);
    assert_eq!(census(&lake, before_optimize).await, (6 * ROWS, 6 * ROWS));
    let table = schema.load(&entry, TableVersion::Latest).await.unwrap();
    let gone = riskstream_lake::vacuum(&entry, table, Duration::ZERO, true, false)
        .await
        .unwrap();
    assert_eq!(gone.files.len() as u64, optimized.files_removed);
    // The latest version is whole.
    assert_eq!(
        census(&lake, TableVersion::Latest).await,
        (6 * ROWS, 6 * ROWS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_come_every_interval() {
    let (dir, lake, mut appender) = new_lake(Some(5)).await;
    for n in 0..12 {
        appender.append(vec![batch(n)], "job", n).await.unwrap();
    }
    let log = dir.path().join("lake/events/_delta_log");
    let mut checkpoints: Vec<String> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".checkpoint.parquet"))
        .collect();
    checkpoints.sort();
    // Every fifth commit, counting the table's creation (version 0) as the first.
    assert_eq!(
        checkpoints,
        [
            "00000000000000000004.checkpoint.parquet",
            "00000000000000000009.checkpoint.parquet"
        ]
    );
    let (schema, entry) = entry_and_table(&lake).await;
    let table = schema.load(&entry, TableVersion::Latest).await.unwrap();
    assert_eq!(
        riskstream_lake::checkpoint(&entry, &table).await.unwrap(),
        12
    );
    assert!(log.join("00000000000000000012.checkpoint.parquet").exists());
    assert_eq!(
        census(&lake, TableVersion::Latest).await,
        (12 * ROWS, 12 * ROWS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commits_history_timestamp_reads_that_version_back() {
    let (dir, lake, mut appender) = new_lake(None).await;
    for n in 0..3 {
        appender.append(vec![batch(n)], "job", n).await.unwrap();
    }
    // A commit file written well after its writer stamped `commitInfo.timestamp` (a loaded
    // machine, a slow store): Delta's commit time is the file's, and both DESCRIBE HISTORY and
    // TIMESTAMP AS OF must use it.
    let log = dir.path().join("lake/events/_delta_log");
    let later = std::time::SystemTime::now() + Duration::from_secs(10);
    for (version, delay) in [(2, 0), (3, 10)] {
        let file = std::fs::File::options()
            .write(true)
            .open(log.join(format!("{version:020}.json")))
            .unwrap();
        file.set_modified(later + Duration::from_secs(delay))
            .unwrap();
    }
    let (schema, _) = entry_and_table(&lake).await;
    let history = schema.history("events", None).await.unwrap();
    for commit in &history {
        let at = TableVersion::TimestampMillis(commit.timestamp_ms);
        let rows = commit.version * ROWS;
        assert_eq!(census(&lake, at).await, (rows, rows), "{}", commit.version);
    }
    let stamped = history.iter().find(|c| c.version == 2).unwrap();
    assert!(stamped.timestamp_ms > stamped.info.timestamp.unwrap() + 5_000);
}

/// Optimize writes its files as the jobs' appends write theirs: in the codec asked, and
/// floating-point columns without a dictionary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_writes_its_files_as_the_appends_do() {
    use riskstream_lake::Codec;
    use riskstream_lake::arrow::array::Float64Array;
    use riskstream_lake::datafusion::parquet::basic::{Compression, Encoding};
    use riskstream_lake::datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("score", DataType::Float64, false),
    ]));
    let spec = TableSpec {
        name: "events".into(),
        schema: Arc::clone(&schema),
        partition_by: Vec::new(),
        stats_columns: None,
        merge_schema: false,
        checkpoint_interval: None,
        compression: Codec::Snappy,
    };
    let mut appender = DeltaAppender::open_or_create(&lake, spec).await.unwrap();
    for n in 0..6 {
        let ids = n * ROWS..(n + 1) * ROWS;
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(ids.clone())),
                Arc::new(Float64Array::from_iter_values(ids.map(|i| i as f64 / 7.0))),
            ],
        )
        .unwrap();
        appender.append(vec![batch], "job", n).await.unwrap();
    }
    let (lake_schema, entry) = entry_and_table(&lake).await;
    let table = lake_schema
        .load(&entry, TableVersion::Latest)
        .await
        .unwrap();
    let options = OptimizeOptions {
        compression: Codec::Snappy,
        ..OptimizeOptions::default()
    };
    let report = riskstream_lake::optimize(&entry, table, &options)
        .await
        .unwrap();
    assert_eq!((report.files_removed, report.files_added), (6, 1));
    // Only the optimized file is left.
    let table = lake_schema
        .load(&entry, TableVersion::Latest)
        .await
        .unwrap();
    riskstream_lake::vacuum(&entry, table, Duration::ZERO, true, false)
        .await
        .unwrap();
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("lake/events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let reader = SerializedFileReader::new(std::fs::File::open(&files[0]).unwrap()).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 6 * ROWS);
    for group in reader.metadata().row_groups() {
        for column in group.columns() {
            assert_eq!(column.compression(), Compression::SNAPPY);
        }
        let score = group.column(1);
        assert!(
            !score
                .encodings()
                .any(|e| matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY)),
            "the floats were written with a dictionary"
        );
    }
    assert_eq!(
        census(&lake, TableVersion::Latest).await,
        (6 * ROWS, 6 * ROWS)
    );
}
