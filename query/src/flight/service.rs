//! The Flight SQL service over a [`LakeSession`]: statements and prepared statements with
//! parameters, the metadata calls BI tools make on connect, cancellation, limits. Read-only.
//!
//! Handles and tickets carry the statement itself (its SQL, bound parameters and an id), so the
//! server keeps nothing per client: a ticket can be fetched from any connection, and closing a
//! prepared statement frees nothing because nothing was held. The id names a running fetch, so
//! that it can be cancelled.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, Nullable, ProstMessageExt, Searchable, SqlInfo,
    SqlSupportedTransaction, TicketStatementQuery, XdbcDataType, XdbcDatetimeSubcode,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use riskstream_lake::arrow::array::{RecordBatch, new_empty_array};
use riskstream_lake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use riskstream_lake::arrow::ipc::reader::StreamReader;
use riskstream_lake::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use riskstream_lake::datafusion::common::ScalarValue;
use riskstream_lake::datafusion::logical_expr::LogicalPlan;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::auth::Authenticator;
use super::stats::{Outcome, QueryStats};
use crate::error::QueryError;
use crate::session::{CATALOG, LakeSession, SCHEMA};

/// The only table type the lake has.
const TABLE_TYPE: &str = "TABLE";
/// Flight's own cancel action (the Flight SQL `CancelQuery` action is handled too).
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// Limits on what one query may return or take.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// A result with more rows fails.
    pub max_rows: Option<u64>,
    /// A fetch running longer is stopped.
    pub query_timeout: Option<Duration>,
}

type Running = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// Flight SQL over the lake.
pub struct LakeFlightService {
    session: Arc<LakeSession>,
    auth: Authenticator,
    limits: Limits,
    running: Running,
    stats: Arc<QueryStats>,
    sql_info: SqlInfoData,
    type_info: XdbcTypeInfoData,
}

/// What a handle or ticket carries: the statement, its bound parameters (one row, Arrow IPC) and
/// the id of this execution.
#[derive(Debug, Serialize, Deserialize)]
struct Handle {
    id: String,
    sql: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<String>,
}

impl Handle {
    fn new(sql: String, params: Option<String>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            sql,
            params,
        }
    }

    fn encode(&self) -> Result<Vec<u8>, Status> {
        serde_json::to_vec(self).map_err(|e| Status::internal(format!("encoding handle: {e}")))
    }

    fn decode(bytes: &[u8]) -> Result<Self, Status> {
        serde_json::from_slice(bytes)
            .map_err(|_| Status::invalid_argument("not a statement handle of this server"))
    }

    /// The same statement under a new execution id.
    fn renewed(&self) -> Self {
        Self::new(self.sql.clone(), self.params.clone())
    }

    fn parameters(&self) -> Result<Vec<ScalarValue>, Status> {
        let Some(encoded) = &self.params else {
            return Ok(Vec::new());
        };
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| Status::invalid_argument("malformed parameters in handle"))?;
        let reader = StreamReader::try_new(bytes.as_slice(), None)
            .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
        let mut values = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
            if batch.num_rows() == 0 {
                continue;
            }
            for column in batch.columns() {
                values.push(
                    ScalarValue::try_from_array(column, 0)
                        .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?,
                );
            }
            break;
        }
        Ok(values)
    }
}

fn status(err: QueryError) -> Status {
    let message = err.to_string();
    match err {
        QueryError::Sql { .. } => Status::invalid_argument(message),
        QueryError::ReadOnly { .. } => Status::permission_denied(message),
        QueryError::Lake(riskstream_lake::LakeError::NoSuchTable { .. }) => {
            Status::not_found(message)
        }
        _ => Status::internal(message),
    }
}

fn flight_status(err: FlightError) -> Status {
    Status::from(err)
}

/// The schema a result has on the wire: the plainest types that carry the same values, so that
/// every Flight SQL client reads them (the JDBC driver and older Arrow readers know no string
/// views, which DataFusion's Parquet scans produce; Delta's partition values come as
/// dictionaries).
fn wire_schema(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema.fields().iter().map(|f| wire_field(f)).collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn wire_field(field: &Field) -> Field {
    field.clone().with_data_type(wire_type(field.data_type()))
}

fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(_, value) => wire_type(value),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(Arc::new(wire_field(f))),
        DataType::ListView(f) => DataType::List(Arc::new(wire_field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(wire_field(f))),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(Arc::new(wire_field(f)), *n),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| wire_field(f)).collect())
        }
        DataType::Map(f, sorted) => DataType::Map(Arc::new(wire_field(f)), *sorted),
        other => other.clone(),
    }
}

/// `batch` in the wire schema (unchanged when it already is).
fn to_wire(batch: RecordBatch, wire: &SchemaRef) -> Result<RecordBatch, FlightError> {
    if batch.schema().fields() == wire.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(wire.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                riskstream_lake::arrow::compute::cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(wire), columns)?)
}

fn schema_ipc(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: riskstream_lake::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

/// The schema a plan's result goes out with. Taken from the physical plan, whose schema the
/// stream carries: the logical one can differ in nullability (`date_trunc` is non-null there,
/// nullable once planned), and clients such as ADBC's reject a stream whose schema is not the
/// one FlightInfo announced.
async fn result_schema(session: &LakeSession, plan: &LogicalPlan) -> Result<Schema, Status> {
    let physical = session
        .frame(plan.clone())
        .create_physical_plan()
        .await
        .map_err(|e| Status::invalid_argument(e.strip_backtrace()))?;
    Ok(wire_schema(physical.schema().as_ref()))
}

/// Names the placeholders of a plan (`$1`, `$2`, ...) in order, with the types the planner
/// inferred (text where it could not tell).
fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, Status> {
    let types = plan
        .get_parameter_types()
        .map_err(|e| Status::invalid_argument(e.strip_backtrace()))?;
    let mut named: Vec<(usize, String, DataType)> = types
        .into_iter()
        .map(|(name, data_type)| {
            let index = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
            (index, name, data_type.unwrap_or(DataType::Utf8))
        })
        .collect();
    named.sort();
    Ok(Schema::new(
        named
            .into_iter()
            .map(|(_, name, data_type)| Field::new(name, data_type, true))
            .collect::<Vec<_>>(),
    ))
}

type DoGetStream = <LakeFlightService as FlightService>::DoGetStream;

fn batch_response(
    schema: SchemaRef,
    batch: Result<RecordBatch, FlightError>,
) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async { batch }))
        .map_err(flight_status);
    Response::new(Box::pin(stream))
}

fn metadata_info<M: ProstMessageExt>(
    command: &M,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

impl LakeFlightService {
    /// A service answering from `session`.
    pub fn new(
        session: Arc<LakeSession>,
        auth: Authenticator,
        limits: Limits,
    ) -> Result<Self, QueryError> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Riskstream");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "59");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(
            SqlInfo::FlightSqlServerTransaction,
            SqlSupportedTransaction::None as i32,
        );
        info.append(SqlInfo::FlightSqlServerCancel, true);
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        info.append(SqlInfo::SqlSearchStringEscape, "\\");
        let sql_info = info.build().map_err(|e| QueryError::Sql {
            message: format!("server info: {e}"),
        })?;
        Ok(Self {
            session,
            auth,
            limits,
            running: Arc::new(Mutex::new(HashMap::new())),
            stats: Arc::new(QueryStats::default()),
            sql_info,
            type_info: type_info()?,
        })
    }

    /// The server's query figures, for its metrics.
    pub fn stats(&self) -> Arc<QueryStats> {
        Arc::clone(&self.stats)
    }

    async fn plan(&self, handle: &Handle) -> Result<LogicalPlan, Status> {
        self.session
            .plan_with_params(&handle.sql, handle.parameters()?)
            .await
            .map_err(status)
    }

    /// The FlightInfo of a statement: its result schema and one ticket that runs it.
    async fn statement_info(
        &self,
        handle: Handle,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let plan = self.plan(&handle).await?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.encode()?.into(),
        };
        metadata_info(
            &ticket,
            &result_schema(&self.session, &plan).await?,
            descriptor,
        )
    }

    /// Runs a statement and streams its result, under the limits and cancellable by its id.
    async fn execute(&self, handle: Handle) -> Result<Response<DoGetStream>, Status> {
        let plan = self.plan(&handle).await?;
        let batches = self
            .session
            .frame(plan)
            .execute_stream()
            .await
            .map_err(|e| Status::internal(e.strip_backtrace()))?;
        let wire = Arc::new(wire_schema(&batches.schema()));
        let cancel = Arc::new(Notify::new());
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(handle.id.clone(), Arc::clone(&cancel));
        let fetch = Fetch {
            batches,
            wire: Arc::clone(&wire),
            rows: 0,
            limits: self.limits,
            deadline: self
                .limits
                .query_timeout
                .map(|t| tokio::time::Instant::now() + t),
            cancel,
            registration: Registration::new(
                handle.id,
                Arc::clone(&self.running),
                Arc::clone(&self.stats),
            ),
            done: false,
        };
        let limited = futures::stream::unfold(fetch, Fetch::next);
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(wire)
            .build(limited)
            .map_err(flight_status);
        Ok(Response::new(Box::pin(stream)))
    }

    /// Cancels the running fetch a FlightInfo's ticket started.
    fn cancel(&self, info: &FlightInfo) -> CancelStatus {
        let ids: Vec<String> = info
            .endpoint
            .iter()
            .filter_map(|e| e.ticket.as_ref())
            .filter_map(|t| Any::decode(t.ticket.clone()).ok())
            .filter_map(|any| any.unpack::<TicketStatementQuery>().ok().flatten())
            .filter_map(|t| Handle::decode(&t.statement_handle).ok())
            .map(|h| h.id)
            .collect();
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cancelled = false;
        for id in ids {
            if let Some(notify) = running.get(&id) {
                notify.notify_one();
                cancelled = true;
            }
        }
        if cancelled {
            CancelStatus::Cancelled
        } else {
            CancelStatus::NotCancellable
        }
    }
}

/// Removes a fetch from the running ones when its stream ends or is dropped (the client went
/// away: DataFusion's stream is dropped with it, which stops the query), and counts it.
struct Registration {
    id: String,
    running: Running,
    stats: Arc<QueryStats>,
    started: std::time::Instant,
    /// Set when the fetch ends; a fetch dropped before its end was cancelled.
    outcome: Outcome,
    rows: u64,
}

impl Registration {
    fn new(id: String, running: Running, stats: Arc<QueryStats>) -> Self {
        stats.started();
        Self {
            id,
            running,
            stats,
            started: std::time::Instant::now(),
            outcome: Outcome::Cancelled,
            rows: 0,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        self.stats
            .finished(self.outcome, self.rows, self.started.elapsed());
    }
}

struct Fetch {
    batches: riskstream_lake::datafusion::execution::SendableRecordBatchStream,
    wire: SchemaRef,
    rows: u64,
    limits: Limits,
    deadline: Option<tokio::time::Instant>,
    cancel: Arc<Notify>,
    registration: Registration,
    done: bool,
}

impl Fetch {
    async fn next(mut self) -> Option<(Result<RecordBatch, FlightError>, Self)> {
        if self.done {
            return None;
        }
        let deadline = self.deadline;
        let expired = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let fail = |status: Status| Err(FlightError::Tonic(Box::new(status)));
        let item = tokio::select! {
            item = self.batches.next() => item.map(|r| r.map_err(|e| FlightError::ExternalError(Box::new(e)))),
            () = self.cancel.notified() => Some(fail(Status::cancelled("query cancelled"))),
            () = expired => Some(fail(Status::deadline_exceeded(format!(
                "query ran longer than limits.query_timeout ({})",
                humantime::format_duration(self.limits.query_timeout.unwrap_or_default())
            )))),
        };
        let Some(item) = item else {
            self.registration.outcome = Outcome::Ok;
            return None;
        };
        let item = match item {
            Ok(batch) => {
                self.rows += batch.num_rows() as u64;
                self.registration.rows = self.rows;
                match self.limits.max_rows {
                    Some(max) if self.rows > max => fail(Status::resource_exhausted(format!(
                        "the result has more than limits.max_rows ({max}) rows: add a LIMIT or a filter"
                    ))),
                    _ => to_wire(batch, &self.wire),
                }
            }
            Err(FlightError::ExternalError(e)) => {
                fail(Status::internal(format!("query failed: {e}")))
            }
            Err(other) => Err(other),
        };
        self.done = item.is_err();
        if self.done {
            let cancelled =
                matches!(&item, Err(FlightError::Tonic(s)) if s.code() == tonic::Code::Cancelled);
            self.registration.outcome = if cancelled {
                Outcome::Cancelled
            } else {
                Outcome::Error
            };
        }
        Some((item, self))
    }
}

#[tonic::async_trait]
impl FlightSqlService for LakeFlightService {
    type FlightService = Self;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = self.auth.handshake(request.metadata())?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let stream: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(futures::stream::iter([Ok(reply)]));
        let mut response = Response::new(stream);
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("token is not a header value"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        self.statement_info(Handle::new(query.query, None), request.into_inner())
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        self.execute(Handle::decode(&ticket.statement_handle)?)
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        let handle = Handle::decode(&query.prepared_statement_handle)?.renewed();
        self.statement_info(handle, request.into_inner()).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        let handle = Handle::decode(&query.prepared_statement_handle)?.renewed();
        self.execute(handle).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.auth.authorize(request.metadata())?;
        let handle = Handle::new(query.query, None);
        let plan = self.plan(&handle).await?;
        let parameters = parameter_schema(&plan)?;
        // Unbound parameters stop physical planning: until they are bound, the logical schema is
        // the best there is (the FlightInfo of each execution has the exact one).
        let dataset = match result_schema(&self.session, &plan).await {
            Ok(schema) => schema,
            Err(_) => wire_schema(plan.schema().as_arrow()),
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode()?.into(),
            dataset_schema: schema_ipc(&dataset)?,
            parameter_schema: if parameters.fields().is_empty() {
                Default::default()
            } else {
                schema_ipc(&parameters)?
            },
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles hold no server state: there is nothing to free.
        self.auth.authorize(request.metadata())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.auth.authorize(request.metadata())?;
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows > 1 {
            return Err(Status::invalid_argument(format!(
                "bind one row of parameters to a query (got {rows}): run it once per row"
            )));
        }
        let params = match batches.iter().find(|b| b.num_rows() == 1) {
            Some(batch) => {
                let mut bytes = Vec::new();
                let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema())
                    .map_err(|e| Status::internal(e.to_string()))?;
                writer
                    .write(batch)
                    .and_then(|()| writer.finish())
                    .map_err(|e| Status::internal(e.to_string()))?;
                drop(writer);
                Some(STANDARD.encode(bytes))
            }
            None => None,
        };
        let bound = Handle::new(handle.sql, params);
        // Checked now, so that a wrong parameter fails the bind and not the later fetch.
        self.plan(&bound).await?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(bound.encode()?.into()),
        })
    }

    async fn do_put_statement_update(
        &self,
        ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.auth.authorize(request.metadata())?;
        Err(read_only_refusal(&ticket.query))
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.auth.authorize(request.metadata())?;
        let handle = Handle::decode(&query.prepared_statement_handle)?;
        Err(read_only_refusal(&handle.sql))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        let schema = query.into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        let schema = builder.schema();
        Ok(batch_response(schema, builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        let schema = builder.schema();
        Ok(batch_response(schema, builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        let mut builder = query.into_builder();
        let empty = Schema::empty();
        for table in self.session.tables().await.map_err(status)? {
            let columns = if builder.include_schema() {
                wire_schema(
                    self.session
                        .table_schema(&table.name)
                        .await
                        .map_err(status)?
                        .as_ref(),
                )
            } else {
                empty.clone()
            };
            builder
                .append(CATALOG, SCHEMA, &table.name, TABLE_TYPE, &columns)
                .map_err(flight_status)?;
        }
        let schema = builder.schema();
        Ok(batch_response(schema, builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        let schema = query.into_builder().schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(TABLE_TYPE);
        let schema = builder.schema();
        Ok(batch_response(schema, builder.build()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        let builder = query.into_builder(&self.sql_info);
        let schema = builder.schema();
        Ok(batch_response(schema, builder.build()))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        metadata_info(&query, &primary_keys_schema(), request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        // Delta tables declare no primary keys.
        Ok(empty_response(primary_keys_schema()))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        metadata_info(&query, &foreign_keys_schema(), request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        // Nor foreign keys: JDBC tools ask when they show a table.
        Ok(empty_response(foreign_keys_schema()))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        metadata_info(&query, &foreign_keys_schema(), request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        Ok(empty_response(foreign_keys_schema()))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        metadata_info(&query, &foreign_keys_schema(), request.into_inner())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        Ok(empty_response(foreign_keys_schema()))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.auth.authorize(request.metadata())?;
        let schema = query.into_builder(&self.type_info).schema();
        metadata_info(&query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.auth.authorize(request.metadata())?;
        let builder = query.into_builder(&self.type_info);
        let schema = builder.schema();
        Ok(batch_response(schema, builder.build()))
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        self.auth.authorize(request.metadata())?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("CancelQuery: {e}")))?;
        // CancelQuery's results: 1 cancelled, 3 not cancellable.
        let result = match self.cancel(&info) {
            CancelStatus::Cancelled => 1,
            _ => 3,
        };
        Ok(ActionCancelQueryResult { result })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        self.auth.authorize(request.metadata())?;
        let action = request.into_inner();
        if action.r#type != CANCEL_FLIGHT_INFO {
            return Err(Status::invalid_argument(format!(
                "unknown action `{}`",
                action.r#type
            )));
        }
        let cancel = CancelFlightInfoRequest::decode(action.body)
            .map_err(|e| Status::invalid_argument(format!("{CANCEL_FLIGHT_INFO}: {e}")))?;
        let info = cancel.info.ok_or_else(|| {
            Status::invalid_argument(format!("{CANCEL_FLIGHT_INFO}: no FlightInfo"))
        })?;
        let result = CancelFlightInfoResult::new(self.cancel(&info));
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: CANCEL_FLIGHT_INFO.to_string(),
            description: "Cancel a running query, by the FlightInfo that started it".to_string(),
        })])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

fn read_only_refusal(sql: &str) -> Status {
    status(QueryError::ReadOnly {
        what: format!("`{}`", sql.trim()),
    })
}

/// A metadata answer with no rows.
fn empty_response(schema: Schema) -> Response<DoGetStream> {
    let schema = Arc::new(schema);
    let columns = schema
        .fields()
        .iter()
        .map(|f| new_empty_array(f.data_type()))
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(FlightError::from);
    batch_response(schema, batch)
}

/// Flight SQL's columns for GetImportedKeys, GetExportedKeys and GetCrossReference.
fn foreign_keys_schema() -> Schema {
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

/// The SQL types the lake's columns have, as JDBC's `getTypeInfo` lists them.
fn type_info() -> Result<XdbcTypeInfoData, QueryError> {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    let types = [
        ("VARCHAR", XdbcDataType::XdbcVarchar, None, true),
        ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(32), false),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(64), false),
        ("FLOAT", XdbcDataType::XdbcFloat, Some(24), false),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), false),
        ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), false),
        ("DATE", XdbcDataType::XdbcDate, None, false),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, false),
        ("VARBINARY", XdbcDataType::XdbcVarbinary, None, false),
    ];
    for (name, data_type, size, text) in types {
        let datetime = matches!(
            data_type,
            XdbcDataType::XdbcDate | XdbcDataType::XdbcTimestamp
        );
        builder.append(XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            column_size: size,
            literal_prefix: (text || datetime).then(|| "'".to_string()),
            literal_suffix: (text || datetime).then(|| "'".to_string()),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: text,
            searchable: Searchable::Full,
            unsigned_attribute: size.map(|_| false),
            local_type_name: Some(name.to_string()),
            sql_data_type: if datetime {
                XdbcDataType::XdbcDatetime
            } else {
                data_type
            },
            datetime_subcode: match data_type {
                // ODBC's SQL_CODE_DATE is 1, which the protocol's enum names YEAR.
                XdbcDataType::XdbcDate => Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
                XdbcDataType::XdbcTimestamp => Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
                _ => None,
            },
            num_prec_radix: size.map(|_| 2),
            ..Default::default()
        });
    }
    builder.build().map_err(|e| QueryError::Sql {
        message: format!("type info: {e}"),
    })
}

/// Flight SQL's columns for GetPrimaryKeys.
fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}
