//! `riskstream demo`.

use riskstream_jobs::demo::{self, DemoOptions};
use riskstream_lake::LakeLocation;

use super::{CommandError, generator_config, stats_json, write_summary};
use crate::cli::DemoArgs;

/// 2026-01-01T00:00:00Z: the demo's first event time unless `--start-time` says otherwise, so the
/// same seed always gives the same events and a rerun finds its batches already committed.
const DEMO_START_MS: i64 = 1_767_225_600_000;

pub async fn run(args: DemoArgs) -> Result<(), CommandError> {
    let lake = LakeLocation::parse(&args.lake)?;
    let options = DemoOptions {
        generator: generator_config(&args.generator, 0.0, DEMO_START_MS),
        events: args.events,
        batch_events: args.batch_events,
        lake: lake.clone(),
        specs: args.specs.clone(),
        jobs: args.jobs.clone(),
    };
    options.generator.validate().map_err(|e| e.to_string())?;
    eprintln!(
        "riskstream demo: {} events, the shipped jobs in micro-batches of {} records, lake at {lake}",
        args.events, args.batch_events
    );
    let report = demo::run(&options).await?;
    let stats = &report.stats;
    if let Some(path) = &args.summary {
        let mut value = stats_json(stats);
        value["run_id"] = report.run_id.clone().into();
        value["jobs"] = report
            .jobs
            .iter()
            .map(|j| {
                serde_json::json!({
                    "spec": j.spec,
                    "table": j.table,
                    "batches": j.summary.batches,
                    "input_rows": j.summary.input_rows,
                    "rows_written": j.summary.output_rows,
                    "dead_letters": j.summary.dead_letter_rows,
                })
            })
            .collect();
        value["rows_written"] = serde_json::json!({
            "risk_scores": report.rows_written("risk_scores"),
            "dead_letters": report.dead_letters(),
            "fraud_labels": report.rows_written("fraud_labels"),
        });
        value["generating_seconds"] = report.generating.as_secs_f64().into();
        value["elapsed_seconds"] = report.elapsed.as_secs_f64().into();
        value["events_per_second"] = report.events_per_second().into();
        write_summary(path, &value)?;
    }
    println!(
        "generated {} events and {} labels in {:.2}s; ran {} jobs over them in {:.2}s ({:.0} events/s)",
        stats.events(),
        stats.labels,
        report.generating.as_secs_f64(),
        report.jobs.len(),
        (report.elapsed - report.generating).as_secs_f64(),
        report.events_per_second()
    );
    if report.nothing_new() {
        println!(
            "every job was already at the end of its topic (same seed and options, run {}): nothing was written twice",
            report.run_id
        );
    }
    for job in &report.jobs {
        println!(
            "  {:<28} -> {:<22} +{:>10} rows in {} batches",
            job.spec, job.table, job.summary.output_rows, job.summary.batches
        );
    }
    println!(
        "  dead_letters: +{} rows (malformed messages); fraud_labels: {} positive",
        report.dead_letters(),
        stats.positive_labels
    );
    let shown = if lake.is_local() {
        args.lake.clone()
    } else {
        lake.to_string()
    };
    println!();
    println!("Delta tables are under {lake}. Try:");
    println!(
        "  riskstream sql --lake {shown} \"SELECT event_type, severity, count(*) AS events, round(avg(risk_score), 3) AS avg_score FROM risk_scores GROUP BY 1, 2 ORDER BY 1, 2\""
    );
    Ok(())
}
