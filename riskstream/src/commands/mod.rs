//! The subcommands' bodies.

mod bench;
mod demo;
mod export;
mod generate;
mod maintain;
mod model;
mod run;
mod serve;
mod shell;
mod sql;
mod train;

use std::path::Path;

use riskstream_jobs::generator::{EntityCounts, GeneratorConfig, GeneratorStats, Source};

use crate::cli::{Cli, Command, GeneratorArgs, SourceArg};

/// An error of a command, already phrased for the user.
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<(), CommandError> {
    match cli.command {
        Command::Generate(args) => generate::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Sql(args) => sql::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Optimize(args) => maintain::optimize(args).await,
        Command::Vacuum(args) => maintain::vacuum(args).await,
        Command::Checkpoint(args) => maintain::checkpoint(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Model(args) => model::run(args).await,
        Command::Train(args) => train::run(args).await,
        Command::Export(args) => export::run(args).await,
    }
}

/// The generator configuration the flags describe; `rate` is the wall-clock rate (0 = unpaced)
/// and `default_start_ms` the first event time when `--start-time` is not given.
pub fn generator_config(args: &GeneratorArgs, rate: f64, default_start_ms: i64) -> GeneratorConfig {
    let start = args.start_time.unwrap_or(default_start_ms);
    let mut sources: Vec<Source> = Vec::new();
    for s in &args.source {
        let add: &[Source] = match s {
            SourceArg::Transactions => &[Source::Transactions],
            SourceArg::Claims => &[Source::Claims],
            SourceArg::Iot => &[Source::Telemetry],
            SourceArg::All => &Source::ALL,
        };
        for source in add {
            if !sources.contains(source) {
                sources.push(*source);
            }
        }
    }
    sources.sort();
    let mut cfg = GeneratorConfig::new(args.seed, start).with_sources(&sources);
    cfg.fraud_rate = args.fraud_rate;
    cfg.malformed_rate = args.malformed;
    cfg.out_of_order_rate = args.out_of_order;
    cfg.late_rate = args.late;
    cfg.label_delay_ms = args.label_delay.as_secs_f64() * 1000.0;
    cfg.events_per_second = args
        .event_rate
        .unwrap_or(if rate > 0.0 { rate } else { 1000.0 });
    cfg.entities = EntityCounts {
        users: args.users,
        policies: args.policies,
        devices: args.devices,
    };
    cfg
}

/// The generator's ground truth as JSON, per source and in total.
pub fn stats_json(stats: &GeneratorStats) -> serde_json::Value {
    let sources: serde_json::Map<String, serde_json::Value> = Source::ALL
        .iter()
        .map(|s| {
            let st = stats.source(*s);
            (
                s.topic().to_string(),
                serde_json::json!({
                    "events": st.events,
                    "malformed": st.malformed,
                    "fraud": st.fraud,
                    "delayed": st.delayed,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "events": stats.events(),
        "valid_events": stats.valid_events(),
        "malformed": stats.sources.iter().map(|s| s.malformed).sum::<u64>(),
        "labels": stats.labels,
        "positive_labels": stats.positive_labels,
        "sources": sources,
    })
}

/// Writes a JSON summary file, naming it when that fails.
pub fn write_summary(path: &Path, value: &serde_json::Value) -> Result<(), CommandError> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).map_err(|e| format!("--summary {}: {e}", path.display()).into())
}
