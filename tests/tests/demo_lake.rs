//! The embedded demo end to end on a local lake: the shipped jobs score every valid event once
//! with the shipped models, every malformed one is a dead letter, alerts and blocks reach their
//! tables, and a rerun of the same demo writes nothing.

#![expect(clippy::unwrap_used, clippy::expect_used)]

use riskstream_jobs::demo::{self, DemoOptions};
use riskstream_jobs::generator::GeneratorConfig;
use riskstream_jobs::schemas::RISK_SCORES_COLUMNS;
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
    // The shipped specs name their SQL files and models from the repository root, as
    // `riskstream run` and `riskstream demo` are run; each test is a process of its own.
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    let options = DemoOptions {
        // 50 events per second of event time: four minutes, so the feature jobs' one-minute
        // watermark passes most events.
        generator: GeneratorConfig {
            events_per_second: 50.0,
            ..GeneratorConfig::new(21, START)
        },
        events: 12_000,
        batch_events: 2_000,
        lake: lake.clone(),
        specs: "jobs/specs".into(),
        jobs: Vec::new(),
    };
    let first = demo::run(&options).await.expect("demo runs");
    assert_eq!(first.jobs.len(), demo::DEMO_JOBS.len());
    assert!(first.jobs.iter().all(|j| j.summary.batches >= 1));
    assert_eq!(
        first.rows_written("risk_scores"),
        first.stats.valid_events()
    );
    let malformed: u64 = first.stats.sources.iter().map(|s| s.malformed).sum();
    assert!(malformed > 0);
    assert_eq!(first.dead_letters(), malformed);

    // The three scoring jobs share risk_scores: its columns are the contract.
    let ctx = session().unwrap();
    Catalog::new(lake.clone()).register_all(&ctx).await.unwrap();
    let columns: Vec<String> = ctx
        .table("risk_scores")
        .await
        .unwrap()
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(columns, RISK_SCORES_COLUMNS);

    let scored = count(&lake, "SELECT count(*) FROM risk_scores").await;
    assert_eq!(scored as u64, first.stats.valid_events());
    let distinct = count(&lake, "SELECT count(DISTINCT event_id) FROM risk_scores").await;
    assert_eq!(distinct, scored);
    let dead = count(&lake, "SELECT count(*) FROM dead_letters").await;
    assert_eq!(dead as u64, malformed);
    let labels = count(&lake, "SELECT count(*) FROM fraud_labels").await;
    assert_eq!(labels as u64, first.stats.labels);
    for table in [
        "transaction_features",
        "claim_features",
        "telemetry_features",
    ] {
        assert!(count(&lake, &format!("SELECT count(*) FROM {table}")).await > 1000);
    }
    // Scores join to their labels: every labelled event was scored.
    let joined = count(
        &lake,
        "SELECT count(*) FROM fraud_labels l JOIN risk_scores s ON l.event_id = s.event_id",
    )
    .await;
    assert_eq!(joined, labels);
    // Every event was scored by its source's shipped model, whose parts are in the row.
    let by_model = count(
        &lake,
        "SELECT count(*) FROM risk_scores WHERE model_version = CASE event_type \
         WHEN 'transaction' THEN 'transactions/1' WHEN 'claim' THEN 'claims/1' \
         ELSE 'telemetry/1' END AND gbdt_score IS NOT NULL AND anomaly_score IS NOT NULL",
    )
    .await;
    assert_eq!(by_model, scored);
    // High scores say which features drove them.
    let unexplained = count(
        &lake,
        "SELECT count(*) FROM risk_scores WHERE model_score >= 0.3 AND \
         (top_features IS NULL OR cardinality(top_features) = 0)",
    )
    .await;
    assert_eq!(unexplained, 0);
    // Planted fraud scores far higher than genuine traffic.
    let rows = ctx
        .sql(
            "SELECT coalesce(l.label, 0) AS label, avg(s.risk_score) FROM risk_scores s \
             LEFT JOIN fraud_labels l ON l.event_id = s.event_id GROUP BY 1 ORDER BY 1",
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
        avg.value(1) > 5.0 * avg.value(0),
        "fraud {} vs genuine {}",
        avg.value(1),
        avg.value(0)
    );

    // The alerts' table holds the high and critical scores, once each; the blocklist, one row
    // per score that blocked its entity.
    let alerted = count(
        &lake,
        "SELECT count(*) FROM risk_scores WHERE severity IN ('high', 'critical')",
    )
    .await;
    assert!(alerted > 0);
    assert_eq!(count(&lake, "SELECT count(*) FROM alerts").await, alerted);
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM alerts a JOIN risk_scores s ON a.event_id = s.event_id \
             AND a.risk_score = s.risk_score"
        )
        .await,
        alerted
    );
    let blocking = count(
        &lake,
        "SELECT count(*) FROM risk_scores \
         WHERE risk_score >= 0.95 AND NOT array_has(reasons, 'blocked_entity')",
    )
    .await;
    assert!(blocking > 0);
    assert_eq!(
        count(&lake, "SELECT count(*) FROM blocked_entities").await,
        blocking
    );

    let again = demo::run(&options).await.expect("demo reruns");
    assert!(again.nothing_new());
    assert_eq!(again.rows_written("risk_scores"), 0);
    assert_eq!(
        count(&lake, "SELECT count(*) FROM risk_scores").await,
        scored
    );
}
