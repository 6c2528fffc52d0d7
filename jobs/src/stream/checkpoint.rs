//! The checkpoint: a query's write-ahead log, in Spark's layout on any object store (a local
//! folder, S3, MinIO).
//!
//! - `metadata`: `{"id":"<query id>"}`, written once; the id is the Delta `txn` appId.
//! - `sources/0/0`: the offsets batch 0 starts from, resolved once from `startingOffsets`, so a
//!   restart before the first commit starts from the same place even with `latest`.
//! - `offsets/<batchId>`: the offsets a batch ends at, written *before* the batch runs.
//! - `commits/<batchId>`: written *after* every sink committed the batch.
//! - `progress/<batchId>`: the batch's progress report (Spark keeps these in memory only).
//! - `state/<batchId>.arrow`: for queries with window functions, what they keep after the batch
//!   (Arrow IPC), written before `commits/<batchId>`: in full, or (incremental windows) what
//!   changed since the batch before, with a full one once the deltas since the last outweigh
//!   it. Snapshots a restart or a replay could still need are kept.
//!
//! Offset and commit files are created with a conditional put: two processes running the same
//! query cannot both write batch N, the second fails instead of silently diverging.

use std::collections::BTreeMap;
use std::sync::Arc;

use riskstream_lake::LakeLocation;
use riskstream_lake::object_store::path::Path;
use riskstream_lake::object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{JobError, Result};

/// Next offset to read, per topic and partition: Spark's offsets JSON (`{"topic":{"0":42}}`).
pub type PartitionOffsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// Spark's log format version line.
const VERSION: &str = "v1";

/// How many batches of logs to keep (Spark's `spark.sql.streaming.minBatchesToRetain`).
const BATCHES_TO_RETAIN: i64 = 100;

/// The query's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMetadata {
    /// The query id: stable across restarts.
    pub id: String,
}

/// Spark's per-batch metadata line of `offsets/<batchId>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetSeqMetadata {
    /// The event-time watermark the batch runs with, in ms since the epoch.
    pub batch_watermark_ms: i64,
    /// The batch's processing time, in ms since the epoch: a replay reuses it.
    pub batch_timestamp_ms: i64,
}

/// An `offsets/<batchId>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetLogEntry {
    /// Batch metadata.
    pub metadata: OffsetSeqMetadata,
    /// Where the batch ends (exclusive), per partition.
    pub end: PartitionOffsets,
}

/// A query's checkpoint folder.
#[derive(Clone)]
pub struct Checkpoint {
    location: String,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("location", &self.location)
            .finish()
    }
}

impl Checkpoint {
    /// Opens (creating when local and missing) the checkpoint at `location`.
    pub fn open(location: &str) -> Result<Self> {
        let lake = LakeLocation::parse(location)
            .map_err(|e| JobError::config("checkpointLocation", e.to_string()))?;
        Ok(Self {
            location: lake.to_string(),
            store: lake.object_store()?,
        })
    }

    /// Where it is, for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn error(&self, path: &Path, source: riskstream_lake::object_store::Error) -> JobError {
        JobError::Checkpoint {
            location: format!("{}/{path}", self.location.trim_end_matches('/')),
            reason: source.to_string(),
        }
    }

    fn corrupt(&self, path: &Path, reason: impl std::fmt::Display) -> JobError {
        JobError::Checkpoint {
            location: format!("{}/{path}", self.location.trim_end_matches('/')),
            reason: format!("unreadable: {reason}"),
        }
    }

    async fn read(&self, path: &Path) -> Result<Option<String>> {
        match self.store.get(path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|e| self.error(path, e))?;
                String::from_utf8(bytes.to_vec())
                    .map(Some)
                    .map_err(|e| self.corrupt(path, e))
            }
            Err(riskstream_lake::object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(path, e)),
        }
    }

    /// A file of a version line and one JSON value, when it exists.
    async fn read_versioned<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>> {
        let Some(text) = self.read(path).await? else {
            return Ok(None);
        };
        let json = text
            .strip_prefix(VERSION)
            .map(str::trim)
            .ok_or_else(|| self.corrupt(path, "no v1 version line"))?;
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| self.corrupt(path, e))
    }

    /// Writes `text` to `path` only if nothing is there yet; `Ok(false)` when something else is.
    /// Finding exactly `text` there counts as written: a put that succeeded but whose answer was
    /// lost is retried by the store and then finds its own file.
    async fn create(&self, path: &Path, text: String) -> Result<bool> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(path, PutPayload::from(text.clone().into_bytes()), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(riskstream_lake::object_store::Error::AlreadyExists { .. }) => {
                Ok(self.read(path).await?.as_deref() == Some(text.as_str()))
            }
            Err(e) => Err(self.error(path, e)),
        }
    }

    /// The query's metadata, written with a new query id when the checkpoint is new.
    pub async fn metadata(&self) -> Result<QueryMetadata> {
        let path = Path::from("metadata");
        if let Some(text) = self.read(&path).await? {
            return serde_json::from_str(&text).map_err(|e| self.corrupt(&path, e));
        }
        let fresh = QueryMetadata {
            id: uuid::Uuid::new_v4().to_string(),
        };
        let text = serde_json::to_string(&fresh).map_err(|e| self.corrupt(&path, e))?;
        if self.create(&path, text).await? {
            return Ok(fresh);
        }
        // Another process created it first: use theirs.
        let text = self
            .read(&path)
            .await?
            .ok_or_else(|| self.corrupt(&path, "vanished after being created"))?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(&path, e))
    }

    /// The offsets batch 0 starts from, once resolved.
    pub async fn initial_offsets(&self) -> Result<Option<PartitionOffsets>> {
        self.read_versioned(&Path::from("sources/0/0")).await
    }

    /// Records the offsets batch 0 starts from; if another process got there first, theirs win
    /// and are returned.
    pub async fn set_initial_offsets(
        &self,
        offsets: &PartitionOffsets,
    ) -> Result<PartitionOffsets> {
        let path = Path::from("sources/0/0");
        let json = serde_json::to_string(offsets).map_err(|e| self.corrupt(&path, e))?;
        if self.create(&path, format!("{VERSION}\n{json}")).await? {
            return Ok(offsets.clone());
        }
        self.initial_offsets()
            .await?
            .ok_or_else(|| self.corrupt(&path, "vanished after being created"))
    }

    /// The batch entries of a log folder: batch id and object path.
    async fn entries(&self, folder: &str) -> Result<Vec<(i64, Path)>> {
        let prefix = Path::from(folder);
        let listing = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| self.error(&prefix, e))?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|o| Some((o.location.filename()?.parse::<i64>().ok()?, o.location)))
            .collect())
    }

    async fn latest_batch(&self, folder: &str) -> Result<Option<i64>> {
        Ok(self
            .entries(folder)
            .await?
            .into_iter()
            .map(|(b, _)| b)
            .max())
    }

    /// The highest batch id with an offsets entry.
    pub async fn latest_offsets_batch(&self) -> Result<Option<i64>> {
        self.latest_batch("offsets").await
    }

    /// The highest batch id with a commit entry.
    pub async fn latest_commit(&self) -> Result<Option<i64>> {
        self.latest_batch("commits").await
    }

    /// The offsets entry of `batch_id`.
    pub async fn offsets(&self, batch_id: i64) -> Result<Option<OffsetLogEntry>> {
        let path = Path::from(format!("offsets/{batch_id}"));
        let Some(text) = self.read(&path).await? else {
            return Ok(None);
        };
        let mut lines = text.lines();
        if lines.next() != Some(VERSION) {
            return Err(self.corrupt(&path, "no v1 version line"));
        }
        let metadata: OffsetSeqMetadata = serde_json::from_str(lines.next().unwrap_or_default())
            .map_err(|e| self.corrupt(&path, e))?;
        let end: PartitionOffsets = serde_json::from_str(lines.next().unwrap_or_default())
            .map_err(|e| self.corrupt(&path, e))?;
        Ok(Some(OffsetLogEntry { metadata, end }))
    }

    /// Writes the offsets entry of `batch_id` before it runs. Fails when the entry exists: some
    /// other process is running this query.
    pub async fn write_offsets(&self, batch_id: i64, entry: &OffsetLogEntry) -> Result<()> {
        let path = Path::from(format!("offsets/{batch_id}"));
        let metadata =
            serde_json::to_string(&entry.metadata).map_err(|e| self.corrupt(&path, e))?;
        let end = serde_json::to_string(&entry.end).map_err(|e| self.corrupt(&path, e))?;
        if self
            .create(&path, format!("{VERSION}\n{metadata}\n{end}"))
            .await?
        {
            Ok(())
        } else {
            Err(self.concurrent(&path))
        }
    }

    fn concurrent(&self, path: &Path) -> JobError {
        JobError::Checkpoint {
            location: format!("{}/{path}", self.location.trim_end_matches('/')),
            reason: "already written: another process is running this query with the same \
                     checkpointLocation (give each instance its own)"
                .into(),
        }
    }

    /// Marks `batch_id` as committed by every sink.
    pub async fn write_commit(&self, batch_id: i64, next_watermark_ms: i64) -> Result<()> {
        let path = Path::from(format!("commits/{batch_id}"));
        let body = serde_json::json!({ "nextBatchWatermarkMs": next_watermark_ms });
        if self.create(&path, format!("{VERSION}\n{body}")).await? {
            Ok(())
        } else {
            Err(self.concurrent(&path))
        }
    }

    /// The watermark the batch after `batch_id` runs with, as its commit recorded it.
    pub async fn next_watermark(&self, batch_id: i64) -> Result<Option<i64>> {
        let body: Option<serde_json::Value> = self
            .read_versioned(&Path::from(format!("commits/{batch_id}")))
            .await?;
        Ok(body.and_then(|b| b.get("nextBatchWatermarkMs").and_then(|v| v.as_i64())))
    }

    /// Stores the query's state after `batch_id`, and deletes the snapshots of batches before
    /// `drop_before` (which neither a restart nor a replay needs any more).
    pub async fn write_state(
        &self,
        batch_id: i64,
        bytes: Vec<u8>,
        drop_before: Option<i64>,
    ) -> Result<()> {
        let path = state_path(batch_id);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.error(&path, e))?;
        let Some(before) = drop_before else {
            return Ok(());
        };
        let folder = Path::from("state");
        let listing = self
            .store
            .list_with_delimiter(Some(&folder))
            .await
            .map_err(|e| self.error(&folder, e))?;
        for object in listing.objects {
            let batch = object
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".arrow"))
                .and_then(|id| id.parse::<i64>().ok());
            if batch.is_some_and(|b| b < before) {
                match self.store.delete(&object.location).await {
                    Ok(()) | Err(riskstream_lake::object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.error(&object.location, e)),
                }
            }
        }
        Ok(())
    }

    /// The first `len` bytes (fewer if it is shorter) of the query's state after `batch_id`,
    /// when stored: a restore walks its chain of snapshots back by their headers, then reads
    /// them one at a time.
    pub async fn state_head(&self, batch_id: i64, len: u64) -> Result<Option<Vec<u8>>> {
        let path = state_path(batch_id);
        match self.store.get_range(&path, 0..len).await {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(riskstream_lake::object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&path, e)),
        }
    }

    /// The query's state after `batch_id`, when stored.
    pub async fn state(&self, batch_id: i64) -> Result<Option<Vec<u8>>> {
        let path = state_path(batch_id);
        match self.store.get(&path).await {
            Ok(got) => Ok(Some(
                got.bytes()
                    .await
                    .map_err(|e| self.error(&path, e))?
                    .to_vec(),
            )),
            Err(riskstream_lake::object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&path, e)),
        }
    }

    /// Stores a batch's progress report.
    pub async fn write_progress(&self, batch_id: i64, report: &serde_json::Value) -> Result<()> {
        let path = Path::from(format!("progress/{batch_id}"));
        self.store
            .put(&path, PutPayload::from(report.to_string().into_bytes()))
            .await
            .map_err(|e| self.error(&path, e))?;
        Ok(())
    }

    /// Records the versions of the tables read beside the stream (`[query] tables`) by batch
    /// `batch_id`, before its query runs: a replay reads the same versions, so it writes and
    /// publishes what the first run did.
    pub async fn write_table_versions(
        &self,
        batch_id: i64,
        versions: &BTreeMap<String, u64>,
    ) -> Result<()> {
        let path = Path::from(format!("tables/{batch_id}"));
        let text = serde_json::to_string(versions).unwrap_or_default();
        self.store
            .put(&path, PutPayload::from(text.into_bytes()))
            .await
            .map_err(|e| self.error(&path, e))?;
        Ok(())
    }

    /// The table versions batch `batch_id` read, if it recorded them.
    pub async fn table_versions(&self, batch_id: i64) -> Result<Option<BTreeMap<String, u64>>> {
        let path = Path::from(format!("tables/{batch_id}"));
        match self.store.get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|e| self.error(&path, e))?;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| self.corrupt(&path, format!("unreadable table versions: {e}")))
            }
            Err(riskstream_lake::object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&path, e)),
        }
    }

    /// Deletes log entries older than the retained window behind `batch_id`.
    pub async fn purge_before(&self, batch_id: i64) -> Result<()> {
        let oldest_kept = batch_id - BATCHES_TO_RETAIN;
        if oldest_kept <= 0 || oldest_kept % 10 != 0 {
            // Every tenth batch is often enough; listings cost a request each.
            return Ok(());
        }
        for folder in ["offsets", "commits", "progress", "tables"] {
            for (batch, path) in self.entries(folder).await? {
                if batch < oldest_kept {
                    self.store
                        .delete(&path)
                        .await
                        .map_err(|e| self.error(&path, e))?;
                }
            }
        }
        Ok(())
    }
}

fn state_path(batch_id: i64) -> Path {
    Path::from(format!("state/{batch_id}.arrow"))
}

/// Rows of `schema` as one Arrow IPC file, as state snapshots hold them.
pub(crate) fn ipc_file(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    batches: &[datafusion::arrow::array::RecordBatch],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = datafusion::arrow::ipc::writer::FileWriter::try_new(&mut out, schema)
        .map_err(JobError::arrow("writing the state snapshot"))?;
    for batch in batches {
        writer
            .write(batch)
            .map_err(JobError::arrow("writing the state snapshot"))?;
    }
    writer
        .finish()
        .map_err(JobError::arrow("writing the state snapshot"))?;
    drop(writer);
    Ok(out)
}

/// The schema and rows of an Arrow IPC file written by [`ipc_file`].
pub(crate) fn read_ipc_file(
    bytes: &[u8],
) -> Result<(
    datafusion::arrow::datatypes::SchemaRef,
    Vec<datafusion::arrow::array::RecordBatch>,
)> {
    let reader =
        datafusion::arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(JobError::arrow("reading the state snapshot"))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(JobError::arrow("reading the state snapshot"))?;
    Ok((schema, batches))
}

/// A snapshot's rows, written with the columns `written`, as rows of `schema`: as they are when
/// the two agree. A snapshot written before the job built only the columns its query reads
/// holds every column of the input: those of `schema` are picked by name. `None` when one is
/// missing or of another type.
pub(crate) fn fit_rows(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    written: &datafusion::arrow::datatypes::SchemaRef,
    batches: Vec<datafusion::arrow::array::RecordBatch>,
) -> Option<Vec<datafusion::arrow::array::RecordBatch>> {
    if written == schema {
        return Some(batches);
    }
    let picked = schema
        .fields()
        .iter()
        .map(|f| {
            let (at, w) = written.column_with_name(f.name())?;
            (w.data_type() == f.data_type() && (f.is_nullable() || !w.is_nullable())).then_some(at)
        })
        .collect::<Option<Vec<usize>>>()?;
    batches
        .into_iter()
        .map(|b| {
            let columns = picked.iter().map(|&at| Arc::clone(b.column(at))).collect();
            datafusion::arrow::array::RecordBatch::try_new(Arc::clone(schema), columns).ok()
        })
        .collect()
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Rows a snapshot kept of every input column restore into an input of fewer columns (a
    /// job whose decoder now builds only the columns its query reads); a column missing, of
    /// another type, or required where the snapshot allowed nulls refuses them.
    #[test]
    fn snapshot_rows_of_more_columns_fit_an_input_of_fewer() {
        use datafusion::arrow::array::{
            ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray,
        };
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let written = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec![Some("a"), None])),
            Arc::new(Float64Array::from(vec![Some(1.5), None])),
        ];
        let rows = RecordBatch::try_new(Arc::clone(&written), columns).unwrap();
        let fit = |fields: Vec<Field>| {
            let schema = Arc::new(Schema::new(fields));
            fit_rows(&schema, &written, vec![rows.clone()]).map(|mut b| b.remove(0))
        };
        let narrow = fit(vec![
            Field::new("amount", DataType::Float64, true),
            Field::new("id", DataType::Int64, true),
        ])
        .unwrap();
        assert_eq!(narrow.column(0), rows.column(2));
        assert_eq!(narrow.column(1), rows.column(0));
        assert_eq!(
            fit(written
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect())
            .unwrap(),
            rows
        );
        assert!(fit(vec![Field::new("city", DataType::Utf8, true)]).is_none());
        assert!(fit(vec![Field::new("id", DataType::Utf8, false)]).is_none());
        assert!(fit(vec![Field::new("amount", DataType::Float64, false)]).is_none());
    }

    #[tokio::test]
    async fn state_snapshots_before_the_one_still_needed_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(dir.path().to_str().unwrap()).unwrap();
        for batch in 0..5 {
            cp.write_state(batch, vec![batch as u8], None)
                .await
                .unwrap();
        }
        cp.write_state(5, vec![5], Some(3)).await.unwrap();
        for batch in 0..6 {
            assert_eq!(
                cp.state(batch).await.unwrap().is_some(),
                batch >= 3,
                "{batch}"
            );
        }
        assert_eq!(cp.state(4).await.unwrap(), Some(vec![4]));
    }

    #[tokio::test]
    async fn logs_round_trip_in_sparks_layout() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(dir.path().to_str().unwrap()).unwrap();
        let meta = cp.metadata().await.unwrap();
        assert_eq!(cp.metadata().await.unwrap(), meta, "the id is stable");
        assert_eq!(cp.latest_offsets_batch().await.unwrap(), None);

        let mut end = PartitionOffsets::new();
        end.entry("transactions".into()).or_default().insert(0, 42);
        end.entry("transactions".into()).or_default().insert(11, 7);
        let entry = OffsetLogEntry {
            metadata: OffsetSeqMetadata {
                batch_watermark_ms: 0,
                batch_timestamp_ms: 1_700_000_000_000,
            },
            end,
        };
        cp.write_offsets(0, &entry).await.unwrap();
        // The same entry again is a retried put finding its own file; another entry is a clash.
        cp.write_offsets(0, &entry).await.unwrap();
        let mut other = entry.clone();
        other.metadata.batch_timestamp_ms += 1;
        let err = cp.write_offsets(0, &other).await.unwrap_err().to_string();
        assert!(
            err.contains("offsets/0") && err.contains("another process"),
            "{err}"
        );
        assert_eq!(cp.offsets(0).await.unwrap(), Some(entry));
        let text = std::fs::read_to_string(dir.path().join("offsets/0")).unwrap();
        assert_eq!(
            text,
            "v1\n{\"batchWatermarkMs\":0,\"batchTimestampMs\":1700000000000}\n{\"transactions\":{\"0\":42,\"11\":7}}"
        );
        cp.write_commit(0, 0).await.unwrap();
        assert_eq!(cp.latest_commit().await.unwrap(), Some(0));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("commits/0")).unwrap(),
            "v1\n{\"nextBatchWatermarkMs\":0}"
        );
    }
}
