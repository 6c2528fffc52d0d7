//! `riskstream generate`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use riskstream_jobs::generate::{self, GenerateOptions, GenerateSummary, Limit, Target};
use riskstream_jobs::generator::Source;

use super::{CommandError, generator_config, stats_json, write_summary};
use crate::cli::GenerateArgs;

pub async fn run(args: GenerateArgs) -> Result<(), CommandError> {
    let target = Target::parse(&args.to)?;
    let limit = match (args.count, args.duration) {
        (Some(n), _) => Limit::Count(n),
        (None, Some(d)) => Limit::Duration(d),
        (None, None) => Limit::Unbounded,
    };
    let summary_path = args.summary.clone();
    let options = GenerateOptions {
        generator: generator_config(
            &args.generator,
            args.rate,
            chrono::Utc::now().timestamp_millis(),
        ),
        // Throughput lines would interleave with the events themselves on stdout.
        progress: !args.quiet && target != Target::Stdout,
        target,
        rate: args.rate,
        limit,
        topic_prefix: args.topic_prefix.clone(),
    };
    options.generator.validate().map_err(|e| e.to_string())?;
    generate::prepare_target(&options).await?;

    // The first Ctrl-C stops generating and waits for deliveries; a second one gives up.
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = Arc::clone(&stop);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.store(true, Ordering::Relaxed);
            eprintln!("stopping: waiting for deliveries (Ctrl-C again to quit now)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let summary = tokio::task::spawn_blocking(move || generate::run(&options, &stop)).await??;
    print_summary(&summary);
    if let Some(path) = &summary_path {
        let delivery: Vec<serde_json::Value> = summary
            .delivery
            .iter()
            .map(|d| {
                serde_json::json!({
                    "topic": d.topic,
                    "sent": d.sent,
                    "acknowledged": d.acknowledged,
                    "failed": d.failed,
                })
            })
            .collect();
        let mut value = stats_json(&summary.stats);
        value["delivery"] = serde_json::Value::Array(delivery);
        value["elapsed_seconds"] = summary.elapsed.as_secs_f64().into();
        value["events_per_second"] = summary.events_per_second().into();
        write_summary(path, &value)?;
    }
    if let Some(error) = &summary.error {
        return Err(error.clone().into());
    }
    if summary.failed() > 0 {
        return Err(format!("{} messages could not be delivered", summary.failed()).into());
    }
    Ok(())
}

fn print_summary(s: &GenerateSummary) {
    eprintln!(
        "generated {} events ({} malformed, {} in fraud patterns) and {} labels in {:.2}s: {:.0} events/s, {:.1} MB",
        s.stats.events(),
        s.stats.sources.iter().map(|x| x.malformed).sum::<u64>(),
        s.stats.sources.iter().map(|x| x.fraud).sum::<u64>(),
        s.stats.labels,
        s.elapsed.as_secs_f64(),
        s.events_per_second(),
        s.bytes as f64 / 1e6
    );
    for source in Source::ALL {
        let st = s.stats.source(source);
        if st.events > 0 {
            eprintln!(
                "  {:<24} {:>10} events  {:>8} malformed  {:>8} fraud  {:>8} delayed",
                source.topic(),
                st.events,
                st.malformed,
                st.fraud,
                st.delayed
            );
        }
    }
    eprintln!("delivery:");
    for d in &s.delivery {
        if d.sent > 0 {
            eprintln!(
                "  {:<24} sent {:>10}  acknowledged {:>10}  failed {:>6}",
                d.topic, d.sent, d.acknowledged, d.failed
            );
        }
    }
}
