//! Keeping tables healthy while jobs append to them: bin-packing the small files micro-batches
//! leave (optionally Z-ordered), vacuuming files no version within the retention needs, and Delta
//! checkpoints. Each is one optimistic Delta commit: a job's concurrent blind appends commit
//! before or after it, never into it, so nothing is lost or doubled.

use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::operations::optimize::OptimizeType;

use crate::catalog::TableEntry;
use crate::codec::Codec;
use crate::error::{LakeError, Result};
use crate::writer::writer_properties;

/// What `optimize` should do.
#[derive(Debug, Clone, Default)]
pub struct OptimizeOptions {
    /// Cluster rows by these columns (Z-order); empty: bin-packing only.
    pub zorder_by: Vec<String>,
    /// Target file size in bytes (default: the table's `delta.targetFileSize`, else 100 MiB).
    pub target_size: Option<NonZeroU64>,
    /// The compression of the files written; they are written as the jobs' appends write
    /// theirs (the same dictionaries), so a compacted table reads as it did.
    pub compression: Codec,
}

/// What `optimize` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptimizeReport {
    /// Small files rewritten.
    pub files_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
    /// Partitions touched.
    pub partitions_optimized: u64,
    /// The table version after (unchanged when there was nothing to do).
    pub version: u64,
}

/// What `vacuum` did (or would do, on a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VacuumReport {
    /// Files deleted (or that would be).
    pub files: Vec<String>,
    /// True when nothing was deleted.
    pub dry_run: bool,
}

/// Bin-packs `table`'s small files (Z-ordering by `options.zorder_by` when given).
pub async fn optimize(
    entry: &TableEntry,
    table: DeltaTable,
    options: &OptimizeOptions,
) -> Result<OptimizeReport> {
    let schema = table
        .snapshot()
        .map_err(LakeError::delta(&entry.name))?
        .schema();
    for column in &options.zorder_by {
        if schema.field(column).is_none() {
            let names: Vec<&str> = schema.fields().map(|f| f.name().as_str()).collect();
            return Err(LakeError::Table {
                table: entry.name.clone(),
                reason: format!(
                    "no column `{column}` to Z-order by (columns: {})",
                    names.join(", ")
                ),
            });
        }
    }
    let kind = if options.zorder_by.is_empty() {
        OptimizeType::Compact
    } else {
        OptimizeType::ZOrder(options.zorder_by.clone())
    };
    let properties = writer_properties(
        &table
            .snapshot()
            .map_err(LakeError::delta(&entry.name))?
            .snapshot()
            .arrow_schema(),
        options.compression,
    );
    let mut builder = table
        .optimize()
        .with_type(kind)
        .with_writer_properties(properties);
    if let Some(size) = options.target_size {
        builder = builder.with_target_size(size);
    }
    let (table, metrics) = builder.await.map_err(LakeError::delta(&entry.name))?;
    Ok(OptimizeReport {
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
        partitions_optimized: metrics.partitions_optimized,
        version: table.version().unwrap_or_default(),
    })
}

/// Deletes the files no table version within `retain` refers to. A retention shorter than the
/// table's `delta.deletedFileRetentionDuration` (7 days by default) is refused unless `force`:
/// readers of older versions, and jobs that are still writing, may need those files.
pub async fn vacuum(
    entry: &TableEntry,
    table: DeltaTable,
    retain: Duration,
    force: bool,
    dry_run: bool,
) -> Result<VacuumReport> {
    let retention = chrono::Duration::from_std(retain).map_err(|_| LakeError::Table {
        table: entry.name.clone(),
        reason: format!("retention {retain:?} is too long"),
    })?;
    let (_, metrics) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(!force)
        .with_dry_run(dry_run)
        .await
        .map_err(|e| {
            // deltalake wraps its retention check in a generic error: recognise it by its words.
            let message = e.to_string();
            if message.contains("Invalid retention period") {
                LakeError::Table {
                    table: entry.name.clone(),
                    reason: format!(
                        "{message}; --force allows a shorter retention, but readers of older \
                         versions and jobs still writing may then fail"
                    ),
                }
            } else {
                LakeError::delta(&entry.name)(e)
            }
        })?;
    Ok(VacuumReport {
        files: metrics.files_deleted,
        dry_run: metrics.dry_run,
    })
}

/// Writes a Delta checkpoint at the table's current version, so readers start from it instead
/// of replaying every commit. Jobs write one every `delta.checkpointInterval` commits on their
/// own; this is for tables that need one now.
pub async fn checkpoint(entry: &TableEntry, table: &DeltaTable) -> Result<u64> {
    deltalake::checkpoints::create_checkpoint(table, None)
        .await
        .map_err(LakeError::delta(&entry.name))?;
    Ok(table.version().unwrap_or_default())
}
