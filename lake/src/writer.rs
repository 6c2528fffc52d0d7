//! Exactly-once appends to one Delta table: each commit carries `txn(appId, version)`, and an
//! append whose version the table already holds for that app id is skipped, so a replayed
//! micro-batch never writes its rows twice.
//!
//! A large append is encoded by one writer per core, each writing its share of the rows to a
//! file of its own, and committed as one version: deltalake's write operation feeds every file
//! through one Parquet encoder, which left a feature job's second core idle for most of each
//! commit (BENCHMARKS.md, "Commits on every core").

use std::num::NonZeroU64;

use deltalake::arrow::datatypes::{DataType, Schema, SchemaRef};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructType, StructTypeExt, Transaction};
use deltalake::operations::write::SchemaMode;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError, TableProperty};

use crate::codec::Codec;
use crate::error::{LakeError, Result};
use crate::location::LakeLocation;

/// A table's name, schema and partition columns, as the writing job declares it.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The table's folder name under the lake root, and its SQL name.
    pub name: String,
    /// The arrow schema of the rows appended.
    pub schema: SchemaRef,
    /// Partition columns, in order.
    pub partition_by: Vec<String>,
    /// Columns to keep file statistics on (`delta.dataSkippingStatsColumns`); `None` for all.
    /// Leave out raw binary payloads: Delta keeps no statistics for them.
    pub stats_columns: Option<Vec<String>>,
    /// Let appends whose rows have new nullable columns widen the table's schema (Spark's
    /// `mergeSchema`); otherwise such an append fails.
    pub merge_schema: bool,
    /// `delta.checkpointInterval` of a table created here: a Delta checkpoint every N commits
    /// (`None`: Delta's default, 100).
    pub checkpoint_interval: Option<u64>,
    /// The compression of the Parquet files its appends write.
    pub compression: Codec,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// A new table version holds the rows.
    Committed {
        /// The table version created.
        table_version: u64,
    },
    /// The table already held this `(app id, version)`: nothing was written.
    AlreadyCommitted,
    /// There were no rows to write.
    Empty,
}

/// Rows each writer of an append takes at least: smaller appends are written as one file.
const ROWS_PER_WRITER: usize = 100_000;

/// Files written by deltalake's writers are cut at this size.
const TARGET_FILE_SIZE: u64 = 512 * 1024 * 1024;

/// The largest dictionary page a column keeps before it falls back to plain values.
const DICTIONARY_PAGE_LIMIT: usize = 64 * 1024;

/// How the Parquet files of a table with `schema` are written: its appends, and the files
/// `optimize` writes in place of small ones.
pub(crate) fn writer_properties(schema: &Schema, codec: Codec) -> WriterProperties {
    // A column's dictionary is given up for plain values (then compressed) once it passes
    // 64 KiB rather than Parquet's 1 MiB: columns of few values (counts, flags, countries,
    // the topic) keep theirs, and columns of many (ids, times, offsets) stop hashing every
    // value into a dictionary they drop anyway. Feature job: commits 8% faster, files 2%
    // smaller (BENCHMARKS.md, "The state written beside the tables").
    let mut properties = WriterProperties::builder()
        .set_compression(codec.compression())
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_LIMIT);
    // Floating-point columns (features, scores) rarely repeat a value: a dictionary for them
    // is built only to be dropped when it outgrows its page, and building it was a tenth of a
    // feature job's time. The schema's top-level ones are written plain, then compressed
    // (nested ones, and columns a schema merge adds, keep Parquet's default).
    for field in schema.fields() {
        if matches!(
            field.data_type(),
            DataType::Float16 | DataType::Float32 | DataType::Float64
        ) {
            properties = properties
                .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    properties.build()
}

/// Appends batches to one Delta table, exactly once per `(app id, version)`.
#[derive(Debug)]
pub struct DeltaAppender {
    spec: TableSpec,
    table: Option<DeltaTable>,
    writer_properties: WriterProperties,
    /// The app id and version of this appender's last commit. The next append for that app id
    /// need not read the log to know what it committed: reading the table's transactions
    /// replays its log from the last checkpoint, which grows with the table's files. Another
    /// writer committing the same app id meanwhile (a second instance of the job) makes the
    /// commit fail as a concurrent transaction, which forgets this.
    last_commit: Option<(String, i64)>,
}

impl DeltaAppender {
    /// Opens the table under `lake`, creating it with `spec`'s schema and partitioning if missing.
    pub async fn open_or_create(lake: &LakeLocation, spec: TableSpec) -> Result<Self> {
        let name = spec.name.clone();
        let delta = |source: DeltaTableError| LakeError::Delta {
            table: name.clone(),
            source: Box::new(source),
        };
        let url = lake.table_url(&spec.name)?;
        if let Ok(path) = url.to_file_path() {
            // deltalake opens local tables only where the folder exists.
            std::fs::create_dir_all(&path).map_err(|e| LakeError::Location {
                location: path.display().to_string(),
                reason: format!("cannot create the table folder: {e}"),
            })?;
        }
        let table =
            DeltaTable::try_from_url_with_storage_options(url, lake.storage_options().clone())
                .await
                .map_err(delta)?;
        let table = if table.version().is_some() {
            table
        } else {
            let kernel: StructType = spec
                .schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| delta(DeltaTableError::from(e)))?;
            let stats = spec.stats_columns.as_ref().map(|c| c.join(","));
            table
                .create()
                .with_table_name(&spec.name)
                .with_configuration_property(TableProperty::DataSkippingStatsColumns, stats)
                .with_configuration_property(
                    TableProperty::CheckpointInterval,
                    spec.checkpoint_interval.map(|n| n.to_string()),
                )
                .with_columns(kernel.fields().cloned())
                .with_partition_columns(spec.partition_by.iter().cloned())
                .with_save_mode(SaveMode::Ignore)
                .await
                .map_err(delta)?
        };
        let writer_properties = writer_properties(&spec.schema, spec.compression);
        Ok(Self {
            spec,
            table: Some(table),
            writer_properties,
            last_commit: None,
        })
    }

    /// The table's declared spec.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    fn delta_error(&self, source: DeltaTableError) -> LakeError {
        LakeError::Delta {
            table: self.spec.name.clone(),
            source: Box::new(source),
        }
    }

    /// The highest version committed for `app_id`, from the latest table state.
    pub async fn committed_version(&mut self, app_id: &str) -> Result<Option<i64>> {
        let Some(table) = self.table.as_mut() else {
            return Ok(None);
        };
        table.update_state().await.map_err(|e| LakeError::Delta {
            table: self.spec.name.clone(),
            source: Box::new(e),
        })?;
        let snapshot = table.snapshot().map_err(|e| LakeError::Delta {
            table: self.spec.name.clone(),
            source: Box::new(e),
        })?;
        snapshot
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| LakeError::Delta {
                table: self.spec.name.clone(),
                source: Box::new(e),
            })
    }

    /// Appends `batches` in one commit carrying `txn(app_id, version)`, unless the table already
    /// holds that version for `app_id`. One Parquet file per partition value per append.
    pub async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        app_id: &str,
        version: i64,
    ) -> Result<AppendOutcome> {
        self.commit(batches, app_id, version, SaveMode::Append)
            .await
    }

    /// Replaces the table's rows with `batches` in one commit carrying `txn(app_id, version)`,
    /// unless the table already holds that version for `app_id` (Spark's complete output mode).
    /// The rows replaced stay readable by time travel until vacuumed.
    pub async fn overwrite(
        &mut self,
        batches: Vec<RecordBatch>,
        app_id: &str,
        version: i64,
    ) -> Result<AppendOutcome> {
        self.commit(batches, app_id, version, SaveMode::Overwrite)
            .await
    }

    async fn commit(
        &mut self,
        batches: Vec<RecordBatch>,
        app_id: &str,
        version: i64,
        mode: SaveMode,
    ) -> Result<AppendOutcome> {
        let done = match &self.last_commit {
            Some((app, done)) if app == app_id => Some(*done),
            _ => self.committed_version(app_id).await?,
        };
        if done.is_some_and(|done| done >= version) {
            return Ok(AppendOutcome::AlreadyCommitted);
        }
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            return Ok(AppendOutcome::Empty);
        }
        let Some(table) = self.table.take() else {
            return Err(self.delta_error(DeltaTableError::NotInitialized));
        };
        let restore = table.clone();
        let writers = self.writers_for(&table, &batches, mode);
        let written = if writers > 1 {
            let mut table = table;
            self.append_side_by_side(&mut table, batches, writers, app_id, version)
                .await
                .map(|table_version| (table, table_version))
        } else {
            let mut write = table.write(batches);
            if self.spec.merge_schema {
                write = write.with_schema_mode(SchemaMode::Merge);
            }
            write
                .with_save_mode(mode)
                .with_partition_columns(self.spec.partition_by.iter().cloned())
                .with_target_file_size(NonZeroU64::new(TARGET_FILE_SIZE))
                .with_writer_properties(self.writer_properties.clone())
                .with_commit_properties(
                    CommitProperties::default()
                        .with_application_transaction(Transaction::new(app_id, version)),
                )
                .await
                .map(|table| {
                    let table_version = table.version().unwrap_or_default();
                    (table, table_version)
                })
        };
        match written {
            Ok((table, table_version)) => {
                self.table = Some(table);
                self.last_commit = Some((app_id.to_string(), version));
                Ok(AppendOutcome::Committed { table_version })
            }
            Err(e) => {
                self.table = Some(restore);
                self.last_commit = None;
                Err(self.delta_error(e))
            }
        }
    }

    /// How many writers encode an append: one per core, each with at least
    /// [`ROWS_PER_WRITER`] rows; 1 (deltalake's write operation) for overwrites, schema
    /// merges, and tables whose writes must be checked against invariants, constraints or
    /// generated columns, which that operation enforces.
    fn writers_for(&self, table: &DeltaTable, batches: &[RecordBatch], mode: SaveMode) -> usize {
        if mode != SaveMode::Append || self.spec.merge_schema {
            return 1;
        }
        let Ok(snapshot) = table.snapshot() else {
            return 1;
        };
        let schema = snapshot.schema();
        let checked = snapshot
            .metadata()
            .configuration()
            .keys()
            .any(|k| k.starts_with("delta.constraints."))
            || !schema.get_invariants().is_ok_and(|i| i.is_empty())
            || !schema.get_generated_columns().is_ok_and(|g| g.is_empty());
        if checked {
            return 1;
        }
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (rows / ROWS_PER_WRITER).clamp(1, cores)
    }

    /// Appends `batches` with `writers` writers side by side, each encoding its share of the
    /// rows into files of its own, then commits every file in one version with
    /// `txn(app_id, version)`. Files of a failed append are left unreferenced (`vacuum` removes
    /// them).
    async fn append_side_by_side(
        &self,
        table: &mut DeltaTable,
        batches: Vec<RecordBatch>,
        writers: usize,
        app_id: &str,
        version: i64,
    ) -> std::result::Result<u64, DeltaTableError> {
        let mut tasks = tokio::task::JoinSet::new();
        for share in shares(batches, writers) {
            let mut writer = RecordBatchWriter::for_table(table)?
                .with_writer_properties(self.writer_properties.clone())
                .with_target_file_size(TARGET_FILE_SIZE);
            tasks.spawn(async move {
                for batch in share {
                    writer.write(batch).await?;
                }
                writer.flush().await
            });
        }
        let mut adds: Vec<Add> = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let written =
                done.map_err(|e| DeltaTableError::Generic(format!("a writer failed: {e}")))?;
            adds.extend(written?);
        }
        let partition_by =
            (!self.spec.partition_by.is_empty()).then(|| self.spec.partition_by.clone());
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by,
            predicate: None,
        };
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new(app_id, version));
        let committed = CommitBuilder::from(properties)
            .with_actions(adds.into_iter().map(Action::Add).collect())
            .build(Some(table.snapshot()?), table.log_store(), operation)
            .await?;
        table.state = Some(committed.snapshot());
        Ok(committed.version() as u64)
    }
}

/// `batches` cut into `n` runs of consecutive rows, as even as whole rows allow.
fn shares(batches: Vec<RecordBatch>, n: usize) -> Vec<Vec<RecordBatch>> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut out: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    let mut share = 0;
    // Rows each share still takes: the first `total % n` take one more.
    let size = |i: usize| total / n + usize::from(i < total % n);
    let mut room = size(0);
    for batch in batches {
        let mut at = 0;
        while at < batch.num_rows() {
            if room == 0 && share + 1 < n {
                share += 1;
                room = size(share);
            }
            let take = (batch.num_rows() - at).min(room.max(1));
            out[share].push(batch.slice(at, take));
            at += take;
            room = room.saturating_sub(take);
        }
    }
    out
}

#[cfg(test)]
#[expect(clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{AsArray, Int64Array};
    use deltalake::arrow::datatypes::{Field, Int64Type, Schema};

    use super::*;

    #[test]
    fn shares_are_even_runs_of_rows_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = |from: i64, to: i64| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from_iter_values(from..to))],
            )
            .expect("a batch")
        };
        let values = |share: &[RecordBatch]| -> Vec<i64> {
            share
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect()
        };
        let split = shares(vec![batch(0, 3), batch(3, 10), batch(10, 11)], 3);
        let got: Vec<Vec<i64>> = split.iter().map(|s| values(s)).collect();
        assert_eq!(
            got,
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10]]
        );
        assert!(split.iter().flatten().all(|b| b.num_rows() > 0));
        let one = shares(vec![batch(0, 5)], 1);
        assert_eq!(values(&one[0]), vec![0, 1, 2, 3, 4]);
    }
}
