//! The Flight SQL server against the Rust Flight SQL client, on loopback: statements, prepared
//! statements with parameters, metadata, time travel, large results, limits, cancellation,
//! authentication and the read-only rule. Results are compared with the same SQL run through
//! the session `riskstream sql` uses.

#![expect(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetTables, CommandGetXdbcTypeInfo,
};
use arrow_flight::{CancelFlightInfoRequest, CancelStatus, FlightClient, FlightInfo};
use futures::TryStreamExt;
use riskstream_lake::arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use riskstream_lake::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use riskstream_lake::{DeltaAppender, LakeLocation, TableSpec};
use riskstream_query::LakeSession;
use riskstream_query::flight::{FlightServer, ServeConfig};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const USER: &str = "analyst";
const PASSWORD: &str = "correct horse";
const TOKEN: &str = "dashboard-token-0123456789";

/// A lake with one table, `scores`: created (version 0), then 1,000 rows (version 1), then 2,000
/// more (version 2).
async fn lake() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    write_scores(&root, "scores").await;
    let root = root.to_str().unwrap().to_string();
    (dir, root)
}

async fn write_scores(root: &std::path::Path, name: &str) {
    let lake = LakeLocation::parse(root.to_str().unwrap()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("region", DataType::Utf8, false),
    ]));
    let spec = TableSpec {
        name: name.into(),
        schema: Arc::clone(&schema),
        partition_by: vec!["region".into()],
        stats_columns: None,
        merge_schema: false,
        checkpoint_interval: None,
        compression: Default::default(),
    };
    let mut appender = DeltaAppender::open_or_create(&lake, spec).await.unwrap();
    for (version, ids) in [(0, 0..1_000i64), (1, 1_000..3_000)] {
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(ids.clone())),
                Arc::new(StringArray::from_iter_values(
                    ids.clone().map(|i| format!("u{}", i % 97)),
                )),
                Arc::new(Float64Array::from_iter_values(
                    ids.clone().map(|i| (i % 500) as f64 * 1.5),
                )),
                Arc::new(StringArray::from_iter_values(
                    ids.map(|i| ["eu", "us", "apac"][(i % 3) as usize]),
                )),
            ],
        )
        .unwrap();
        appender.append(vec![batch], "test", version).await.unwrap();
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn channel(&self) -> Channel {
        Endpoint::new(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn client(&self) -> FlightSqlServiceClient<Channel> {
        let mut client = FlightSqlServiceClient::new(self.channel().await);
        client.handshake(USER, PASSWORD).await.unwrap();
        client
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

async fn serve(lake: &str, limits: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serve.toml");
    std::fs::write(
        &path,
        format!(
            "[auth]\nusers = [{{ name = \"{USER}\", password = \"{PASSWORD}\" }}]\n\
             tokens = [\"{TOKEN}\"]\n[limits]\n{limits}\n"
        ),
    )
    .unwrap();
    let config = ServeConfig::load(Some(&path), Some(lake), Some("127.0.0.1:0")).unwrap();
    let server = FlightServer::bind(&config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        server
            .serve(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.unwrap()).await?;
        batches.extend(stream.try_collect::<Vec<_>>().await?);
    }
    Ok(batches)
}

/// Runs `sql`, checking that the batches come with the schema FlightInfo announced (strict
/// clients, ADBC's among them, refuse a stream that differs).
async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = client.execute(sql.to_string(), None).await.unwrap();
    let announced = info.clone().try_decode_schema().unwrap();
    let batches = fetch(client, info).await.unwrap();
    for batch in &batches {
        assert_eq!(batch.schema().as_ref(), &announced, "{sql}");
    }
    batches
}

/// Rows as text, for comparing results whatever their batch boundaries and column types.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = riskstream_lake::arrow::util::display::FormatOptions::default();
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                riskstream_lake::arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options)
                    .unwrap()
            })
            .collect();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

async fn local(lake: &str, sql: &str) -> Vec<RecordBatch> {
    let session = LakeSession::open(LakeLocation::open_existing(lake).unwrap())
        .await
        .unwrap();
    session.sql(sql).await.unwrap().collect().await.unwrap()
}

fn count(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

fn code(err: &arrow_flight::error::FlightError) -> Code {
    match err {
        arrow_flight::error::FlightError::Tonic(status) => status.code(),
        other => panic!("not a status: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_metadata_answer_as_riskstream_sql_does() {
    let (_dir, lake) = lake().await;
    let server = serve(&lake, "").await;
    let mut client = server.client().await;

    for sql in [
        "SELECT region, count(*) AS n, sum(amount) AS total FROM scores GROUP BY region ORDER BY region",
        "SELECT * FROM scores WHERE id % 250 = 0 ORDER BY id",
        "SELECT date_trunc('hour', to_timestamp(id * 60)) AS hour, count(*) AS n FROM scores GROUP BY 1 ORDER BY 1",
        "SELECT count(*) FROM scores VERSION AS OF 1",
        "DESCRIBE HISTORY scores",
    ] {
        let remote = query(&mut client, sql).await;
        let here = local(&lake, sql).await;
        if sql.starts_with("DESCRIBE") {
            assert_eq!(remote.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        } else {
            assert_eq!(rows(&remote), rows(&here), "{sql}");
        }
    }
    let old = query(&mut client, "SELECT count(*) FROM scores VERSION AS OF 1").await;
    assert_eq!(count(&old), 1_000);
    let now = query(&mut client, "SELECT count(*) FROM scores").await;
    assert_eq!(count(&now), 3_000);
    // A table created while the server runs is found by the first query that names it.
    write_scores(std::path::Path::new(&lake), "scores_copy").await;
    let copy = query(&mut client, "SELECT count(*) FROM scores_copy").await;
    assert_eq!(count(&copy), 3_000);

    let info = client.get_catalogs().await.unwrap();
    let catalogs = fetch(&mut client, info).await.unwrap();
    assert_eq!(rows(&catalogs), ["riskstream"]);
    let info = client
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    assert_eq!(
        rows(&fetch(&mut client, info).await.unwrap()),
        ["riskstream|lake"]
    );
    let info = client
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: Some("scor_s".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut client, info).await.unwrap();
    assert_eq!(tables[0].num_rows(), 1);
    assert_eq!(
        tables[0]
            .column_by_name("table_name")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "scores"
    );
    let ipc = tables[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>()
        .value(0)
        .to_vec();
    let schema = Schema::try_from(arrow_flight::IpcMessage(ipc.into())).unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "user_id", "amount", "region"]);
    let info = client.get_table_types().await.unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await.unwrap()), ["TABLE"]);
    let info = client
        .get_sql_info(vec![arrow_flight::sql::SqlInfo::FlightSqlServerName])
        .await
        .unwrap();
    let info_rows = rows(&fetch(&mut client, info).await.unwrap());
    assert!(info_rows[0].contains("Riskstream"), "{info_rows:?}");

    // What JDBC tools ask when they show a table: types, and keys (none in Delta).
    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let types = rows(&fetch(&mut client, info).await.unwrap());
    for name in ["VARCHAR", "BIGINT", "DOUBLE", "TIMESTAMP"] {
        assert!(
            types.iter().any(|t| t.starts_with(&format!("{name}|"))),
            "{types:?}"
        );
    }
    let (schema, table) = (Some("lake".to_string()), "scores".to_string());
    let keys = [
        client
            .get_primary_keys(CommandGetPrimaryKeys {
                catalog: None,
                db_schema: schema.clone(),
                table: table.clone(),
            })
            .await
            .unwrap(),
        client
            .get_imported_keys(CommandGetImportedKeys {
                catalog: None,
                db_schema: schema.clone(),
                table: table.clone(),
            })
            .await
            .unwrap(),
        client
            .get_exported_keys(CommandGetExportedKeys {
                catalog: None,
                db_schema: schema,
                table,
            })
            .await
            .unwrap(),
    ];
    for info in keys {
        assert!(rows(&fetch(&mut client, info).await.unwrap()).is_empty());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_parameters() {
    let (_dir, lake) = lake().await;
    let server = serve(&lake, "").await;
    let mut client = server.client().await;
    let mut prepared = client
        .prepare(
            "SELECT count(*) FROM scores WHERE amount > ? AND region = ?".to_string(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 2);
    for (amount, region) in [(100.0, "eu"), (600.0, "us"), (-1.0, "apac")] {
        let params = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("$1", DataType::Float64, false),
                Field::new("$2", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Float64Array::from(vec![amount])),
                Arc::new(StringArray::from(vec![region])),
            ],
        )
        .unwrap();
        prepared.set_parameters(params).unwrap();
        let info = prepared.execute().await.unwrap();
        let remote = fetch(&mut client, info).await.unwrap();
        let here = local(
            &lake,
            &format!("SELECT count(*) FROM scores WHERE amount > {amount} AND region = '{region}'"),
        )
        .await;
        assert_eq!(count(&remote), count(&here), "{amount} {region}");
    }
    prepared.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_missing_tokens_are_rejected() {
    let (_dir, lake) = lake().await;
    let server = serve(&lake, "").await;
    let mut wrong = FlightSqlServiceClient::new(server.channel().await);
    // The client wraps the handshake's status in an error of its own: check the words.
    let err = wrong.handshake(USER, "guess").await.unwrap_err();
    assert!(
        err.to_string().contains("wrong user name or password"),
        "{err}"
    );
    let mut anonymous = FlightSqlServiceClient::new(server.channel().await);
    let err = anonymous
        .execute("SELECT 1".to_string(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::Unauthenticated, "{err}");
    let mut forged = FlightSqlServiceClient::new(server.channel().await);
    forged.set_token("not-a-token-we-issued".to_string());
    let err = forged
        .execute("SELECT 1".to_string(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::Unauthenticated, "{err}");
    let mut with_static = FlightSqlServiceClient::new(server.channel().await);
    with_static.set_token(TOKEN.to_string());
    assert_eq!(
        count(&query(&mut with_static, "SELECT count(*) FROM scores").await),
        3_000
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused() {
    let (_dir, lake) = lake().await;
    let server = serve(&lake, "").await;
    let mut client = server.client().await;
    for sql in [
        "CREATE TABLE copy AS SELECT * FROM scores",
        "INSERT INTO scores VALUES (1, 'u', 1.0, 'eu')",
        "DROP TABLE scores",
        "SET datafusion.execution.batch_size = 10",
    ] {
        let err = client.execute(sql.to_string(), None).await.unwrap_err();
        assert_eq!(code(&err), Code::PermissionDenied, "{sql}: {err}");
        assert!(err.to_string().contains("read-only"), "{err}");
    }
    let err = client
        .execute_update("DELETE FROM scores".to_string(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::PermissionDenied, "{err}");
    assert_eq!(
        count(&query(&mut client, "SELECT count(*) FROM scores").await),
        3_000
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_stream_in_many_batches_and_row_limits_hold() {
    let (_dir, lake) = lake().await;
    let server = serve(&lake, "").await;
    let mut client = server.client().await;
    let batches = query(
        &mut client,
        "SELECT value, value * 2 AS twice FROM generate_series(1, 2000000)",
    )
    .await;
    assert!(batches.len() > 10, "{} batches", batches.len());
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(total, 2_000_000);
    let sum: i64 = batches
        .iter()
        .map(|b| {
            b.column(0)
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .sum::<i64>()
        })
        .sum();
    assert_eq!(sum, 2_000_000 * 2_000_001 / 2);
    server.stop().await;

    let limited = serve(&lake, "max_rows = 1000").await;
    let mut client = limited.client().await;
    let info = client
        .execute("SELECT * FROM scores".to_string(), None)
        .await
        .unwrap();
    let err = fetch(&mut client, info).await.unwrap_err();
    assert_eq!(code(&err), Code::ResourceExhausted, "{err}");
    let ok = query(&mut client, "SELECT * FROM scores LIMIT 1000").await;
    assert_eq!(ok.iter().map(RecordBatch::num_rows).sum::<usize>(), 1000);
    limited.stop().await;
}

/// A query that runs for minutes: a cross join of 10^10 rows.
const ENDLESS: &str =
    "SELECT sum(a.value * b.value) FROM generate_series(1, 100000) a, generate_series(1, 100000) b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_queries_can_be_cancelled_and_time_out() {
    let (_dir, lake) = lake().await;
    let server = serve(&lake, "").await;
    let mut client = server.client().await;
    let info = client.execute(ENDLESS.to_string(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut fetching = client.clone();
    let fetch_task = tokio::spawn(async move {
        let stream = fetching.do_get(ticket).await?;
        stream.try_collect::<Vec<_>>().await
    });
    let mut flight = FlightClient::new(server.channel().await);
    flight
        .add_header("authorization", &format!("Bearer {TOKEN}"))
        .unwrap();
    // The fetch registers when its stream starts: retry until the server knows it.
    let mut status = CancelStatus::Unspecified;
    for _ in 0..600 {
        let result = flight
            .cancel_flight_info(CancelFlightInfoRequest::new(info.clone()))
            .await
            .unwrap();
        status = result.status();
        if status == CancelStatus::Cancelled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, CancelStatus::Cancelled);
    let outcome = tokio::time::timeout(Duration::from_secs(120), fetch_task)
        .await
        .expect("a cancelled query ends")
        .unwrap();
    let err = outcome.unwrap_err();
    assert_eq!(code(&err), Code::Cancelled, "{err}");
    server.stop().await;

    let timed = serve(&lake, "query_timeout = \"1s\"").await;
    let mut client = timed.client().await;
    let info = client.execute(ENDLESS.to_string(), None).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(120), fetch(&mut client, info))
        .await
        .expect("a query past its timeout ends");
    let err = outcome.unwrap_err();
    assert_eq!(code(&err), Code::DeadlineExceeded, "{err}");
    timed.stop().await;
}
