//! `riskstream optimize`, `vacuum` and `checkpoint`: table maintenance, one Delta commit each,
//! safe while jobs keep appending.

use std::num::NonZeroU64;

use riskstream_lake::{
    Catalog, LakeLocation, LakeSchema, OptimizeOptions, TableEntry, TableVersion,
};

use super::CommandError;
use crate::cli::{OptimizeArgs, TableArgs, VacuumArgs};

async fn open(args: &TableArgs) -> Result<(LakeSchema, TableEntry), CommandError> {
    let lake = LakeLocation::open_existing(&args.lake)?;
    let schema = LakeSchema::new(Catalog::new(lake));
    let entry = schema
        .entry(&args.table)
        .await?
        .ok_or_else(|| schema.missing(&args.table))?;
    Ok((schema, entry))
}

pub async fn optimize(args: OptimizeArgs) -> Result<(), CommandError> {
    let (schema, entry) = open(&args.table).await?;
    let table = schema.load(&entry, TableVersion::Latest).await?;
    let options = OptimizeOptions {
        zorder_by: args.zorder_by,
        target_size: args
            .target_size_mib
            .and_then(|mib| NonZeroU64::new(mib << 20)),
        compression: args.compression,
    };
    let report = riskstream_lake::optimize(&entry, table, &options).await?;
    println!(
        "optimized {}: {} files rewritten into {} in {} partitions; table version {}",
        entry.name,
        report.files_removed,
        report.files_added,
        report.partitions_optimized,
        report.version
    );
    Ok(())
}

pub async fn vacuum(args: VacuumArgs) -> Result<(), CommandError> {
    let (schema, entry) = open(&args.table).await?;
    let table = schema.load(&entry, TableVersion::Latest).await?;
    let report =
        riskstream_lake::vacuum(&entry, table, args.retain, args.force, args.dry_run).await?;
    for file in &report.files {
        println!("{file}");
    }
    println!(
        "{} {}: {} files {}",
        if report.dry_run {
            "dry run of vacuum on"
        } else {
            "vacuumed"
        },
        entry.name,
        report.files.len(),
        if report.dry_run {
            "would be deleted"
        } else {
            "deleted"
        }
    );
    Ok(())
}

pub async fn checkpoint(args: TableArgs) -> Result<(), CommandError> {
    let (schema, entry) = open(&args).await?;
    let table = schema.load(&entry, TableVersion::Latest).await?;
    let version = riskstream_lake::checkpoint(&entry, &table).await?;
    println!("checkpoint of {} at version {version}", entry.name);
    Ok(())
}
