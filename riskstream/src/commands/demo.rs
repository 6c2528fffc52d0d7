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
    };
    options.generator.validate().map_err(|e| e.to_string())?;
    eprintln!(
        "riskstream demo: {} events in micro-batches of {}, lake at {lake}",
        args.events, args.batch_events
    );
    let report = demo::run(&options).await?;
    let stats = &report.stats;
    if let Some(path) = &args.summary {
        let mut value = stats_json(stats);
        value["app_id"] = report.app_id.clone().into();
        value["batches"] = report.batches.into();
        value["replayed_batches"] = report.replayed_batches.into();
        value["rows_written"] = serde_json::json!({
            "risk_scores": report.scored,
            "dead_letters": report.dead_letters,
            "fraud_labels": report.labels,
        });
        value["elapsed_seconds"] = report.elapsed.as_secs_f64().into();
        value["events_per_second"] = report.events_per_second().into();
        write_summary(path, &value)?;
    }
    println!(
        "scored {} events in {} micro-batches in {:.2}s ({:.0} events/s end to end)",
        stats.events(),
        report.batches,
        report.elapsed.as_secs_f64(),
        report.events_per_second()
    );
    if report.replayed_batches > 0 {
        println!(
            "{} of {} batches were already in the lake (same seed and options, app id {}): nothing was written twice",
            report.replayed_batches, report.batches, report.app_id
        );
    }
    println!("  risk_scores    +{:>10} rows", report.scored);
    println!(
        "  dead_letters   +{:>10} rows (malformed messages)",
        report.dead_letters
    );
    println!(
        "  fraud_labels   +{:>10} rows ({} positive)",
        report.labels, stats.positive_labels
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
