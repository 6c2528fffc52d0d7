//! The embedded demo end to end on a local lake: every valid event is scored once, every
//! malformed one is a dead letter, and a rerun of the same demo writes nothing.

#![expect(clippy::unwrap_used, clippy::expect_used)]

use riskstream_jobs::demo::{self, DemoOptions};
use riskstream_jobs::generator::GeneratorConfig;
use riskstream_jobs::scoring::session;
use riskstream_lake::arrow::array::{AsArray, RecordBatch};
use riskstream_lake::arrow::datatypes::Int64Type;
use riskstream_lake::{Catalog, LakeLocation};

const START: i64 = 1_793_491_200_000;

async fn count(lake: &LakeLocation, sql: &str) -> i64 {
    let ctx = session().unwrap();
    Catalog::new(lake.clone()).register_all(&ctx).await.unwrap();
    let batches: Vec<RecordBatch> = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_scores_every_valid_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    let options = DemoOptions {
        generator: GeneratorConfig::new(21, START),
        events: 12_000,
        batch_events: 5_000,
        lake: lake.clone(),
    };
    let first = demo::run(&options).await.expect("demo runs");
    assert_eq!(first.batches, 3);
    assert_eq!(first.scored, first.stats.valid_events());
    let malformed: u64 = first.stats.sources.iter().map(|s| s.malformed).sum();
    assert!(malformed > 0);
    assert_eq!(first.dead_letters, malformed);

    let scored = count(&lake, "SELECT count(*) FROM risk_scores").await;
    assert_eq!(scored as u64, first.stats.valid_events());
    let distinct = count(&lake, "SELECT count(DISTINCT event_id) FROM risk_scores").await;
    assert_eq!(distinct, scored);
    let dead = count(&lake, "SELECT count(*) FROM dead_letters").await;
    assert_eq!(dead as u64, malformed);
    let labels = count(&lake, "SELECT count(*) FROM fraud_labels").await;
    assert_eq!(labels as u64, first.stats.labels);
    // Scores join to their labels: every labelled event was scored.
    let joined = count(
        &lake,
        "SELECT count(*) FROM fraud_labels l JOIN risk_scores s ON l.event_id = s.event_id",
    )
    .await;
    assert_eq!(joined, labels);
    // Planted fraud scores higher on average than genuine traffic, even with rules alone.
    let ctx = session().unwrap();
    Catalog::new(lake.clone()).register_all(&ctx).await.unwrap();
    let rows = ctx
        .sql(
            "SELECT l.label, avg(s.risk_score) FROM fraud_labels l JOIN risk_scores s \
             ON l.event_id = s.event_id GROUP BY l.label ORDER BY l.label",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let avg = rows[0]
        .column(1)
        .as_primitive::<riskstream_lake::arrow::datatypes::Float64Type>();
    assert!(
        avg.value(1) > avg.value(0),
        "fraud {} vs genuine {}",
        avg.value(1),
        avg.value(0)
    );

    let again = demo::run(&options).await.expect("demo reruns");
    assert_eq!(again.replayed_batches, again.batches);
    assert_eq!((again.scored, again.dead_letters, again.labels), (0, 0, 0));
    assert_eq!(
        count(&lake, "SELECT count(*) FROM risk_scores").await,
        scored
    );
}
