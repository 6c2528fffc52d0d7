//! `riskstream bench`: measurements that need no broker.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use datafusion::arrow::array::BinaryBuilder;
use riskstream_jobs::decode::JsonDecoder;
use riskstream_jobs::generator::{Generator, GeneratorConfig, Message, Source, Stream, nexmark};
use riskstream_jobs::schemas::source_schema;
use riskstream_jobs::stream::progress::QueryProgress;
use riskstream_jobs::stream::runner::{self, RunOptions};
use riskstream_jobs::stream::source::MemorySource;
use riskstream_jobs::stream::spec::{DeclaredSchema, JobSpec, TopicSelection, Trigger};

use super::{CommandError, write_summary};
use crate::cli::{
    BenchArgs, BenchCommand, DecodeBenchArgs, EngineBenchArgs, NexmarkBenchArgs, SourceArg,
};

/// First event time of generated benchmark events (fixed, so runs are comparable).
const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Partitions of the in-process topic of Nexmark's bids.
const NEXMARK_PARTITIONS: i32 = 12;

pub async fn run(args: BenchArgs) -> Result<(), CommandError> {
    match args.command {
        BenchCommand::Engine(args) => engine(args).await,
        BenchCommand::Nexmark(args) => nexmark(args).await,
        BenchCommand::Decode(args) => tokio::task::spawn_blocking(move || decode(args)).await?,
    }
}

/// `riskstream bench decode`: the decoder alone, one thread, over messages in memory.
fn decode(args: DecodeBenchArgs) -> Result<(), CommandError> {
    let source = match args.source {
        SourceArg::Transactions => Source::Transactions,
        SourceArg::Claims => Source::Claims,
        SourceArg::Iot => Source::Telemetry,
        SourceArg::All => return Err("--source: one source at a time".into()),
    };
    eprintln!(
        "generating {} {} events (not timed)",
        args.events,
        source.cli_name()
    );
    let config = GeneratorConfig::new(args.seed, START_MS).with_sources(&[source]);
    let mut generator = Generator::new(config)?;
    let (mut values, mut message) = (BinaryBuilder::new(), Message::default());
    let (mut made, mut bytes) = (0, 0);
    while made < args.events {
        generator.next_message(&mut message);
        if let Some(Stream::Events(_)) = message.stream {
            values.append_value(&message.value);
            bytes += message.value.len();
            made += 1;
        }
    }
    let values = values.finish();

    let schema = source_schema(source);
    let whole = JsonDecoder::new(Arc::clone(&schema))?;
    let mut decoders = vec![("every column".to_string(), whole.clone())];
    if !args.columns.is_empty() {
        let mut columns = args
            .columns
            .iter()
            .map(|name| {
                schema.index_of(name).map_err(|_| {
                    format!("--columns: {} events have no `{name}`", source.cli_name())
                })
            })
            .collect::<Result<Vec<usize>, String>>()?;
        columns.sort_unstable();
        columns.dedup();
        decoders.push((args.columns.join(","), whole.building(&columns)?));
    }
    println!(
        "{made} {} events, {:.0} bytes each on average; best and median of {} runs, one thread",
        source.cli_name(),
        bytes as f64 / made as f64,
        args.runs
    );
    for (name, decoder) in &decoders {
        let (mut times, mut rejected) = (Vec::new(), 0);
        for _ in 0..args.runs {
            let started = Instant::now();
            let decoded = decoder.decode(&values)?;
            times.push(started.elapsed().as_secs_f64());
            rejected = decoded.rejected.len();
        }
        times.sort_by(f64::total_cmp);
        let (best, median) = (times[0], times[times.len() / 2]);
        println!(
            "{name}: {:.0} ns/message, {:.0} MB/s (best); {:.0} ns/message (median); \
             {rejected} malformed set aside",
            best * 1e9 / made as f64,
            bytes as f64 / best / 1e6,
            median * 1e9 / made as f64,
        );
    }
    Ok(())
}

async fn engine(args: EngineBenchArgs) -> Result<(), CommandError> {
    let (spec, topic) = prepare(&args.spec, &args.out)?;
    let Some(DeclaredSchema::Events(source)) = spec.query.schema else {
        return Err(format!(
            "{}: query.schema must name generated events (transactions, claims or telemetry)",
            args.spec.display()
        )
        .into());
    };
    eprintln!(
        "generating {} {} events in process (not timed)",
        args.events,
        source.cli_name()
    );
    let mut config = GeneratorConfig::new(args.seed, START_MS).with_sources(&[source]);
    config.entities.users = args.users;
    config.events_per_second = args.event_rate;
    let events = args.events;
    let log = tokio::task::spawn_blocking(move || {
        MemorySource::generate(&topic, source.partitions(), config, events)
    })
    .await??;
    measure(&args.spec, spec, log, args.summary.as_deref()).await
}

async fn nexmark(args: NexmarkBenchArgs) -> Result<(), CommandError> {
    let (spec, topic) = prepare(&args.spec, &args.out)?;
    let bid = nexmark::bid_schema().map_err(|e| format!("the bid schema: {e}"))?;
    if spec.query.schema != Some(DeclaredSchema::Ddl(bid)) {
        return Err(format!(
            "{}: query.schema must be Nexmark's bid, \"{}\"",
            args.spec.display(),
            nexmark::BID_SCHEMA_DDL
        )
        .into());
    }
    eprintln!(
        "generating {} Nexmark bids in process (not timed)",
        args.events
    );
    let run = nexmark::NexmarkRun {
        base_time_ms: START_MS as u64,
        events_per_second: args.event_rate as usize,
    };
    let events = args.events as usize;
    let log = tokio::task::spawn_blocking(move || {
        MemorySource::from_records(&topic, NEXMARK_PARTITIONS, nexmark::bids(run).take(events))
    })
    .await??;
    measure(&args.spec, spec, log, args.summary.as_deref()).await
}

/// The spec at `path` with its tables and checkpoint moved into the new folder `out` and its
/// alerts left out (they need a broker), and the topic its in-process log is to have.
fn prepare(path: &Path, out: &Path) -> Result<(JobSpec, String), CommandError> {
    let mut spec = JobSpec::load(path)?;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        return Err(format!(
            "--out {}: not empty (the run needs a new folder)",
            out.display()
        )
        .into());
    }
    let out = std::path::absolute(out)?;
    let lake = out.display().to_string();
    spec.relocate(&lake, &format!("{lake}/checkpoints"));
    spec.alerts = None;
    let topic = match (&spec.source.topics, &spec.query.schema) {
        (TopicSelection::Subscribe(topics), _) => topics[0].clone(),
        (TopicSelection::Pattern(_), Some(DeclaredSchema::Events(source))) => {
            source.topic().to_string()
        }
        (TopicSelection::Pattern(_), _) => {
            return Err(format!(
                "{}: a benchmark job subscribes to one topic",
                path.display()
            )
            .into());
        }
    };
    Ok((spec, topic))
}

/// Runs `spec` over `log` (availableNow), prints events/s, time per phase and memory, and
/// writes them to `summary` as JSON if asked.
async fn measure(
    path: &Path,
    spec: JobSpec,
    log: MemorySource,
    summary_path: Option<&Path>,
) -> Result<(), CommandError> {
    let records = log.len();
    let before_run = memory_kib("VmRSS");
    let options = RunOptions {
        spec,
        trigger: Trigger::AvailableNow,
        partitions: None,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let mut reports: Vec<QueryProgress> = Vec::new();
    let start = Instant::now();
    let summary = runner::run_with(options, log, |p| reports.push(p.clone())).await?;
    let elapsed = start.elapsed().as_secs_f64();
    let rate = summary.input_rows as f64 / elapsed.max(1e-9);
    let phase = |f: fn(&QueryProgress) -> u64| reports.iter().map(f).sum::<u64>();
    let phases = serde_json::json!({
        "getBatch": phase(|p| p.duration_ms.get_batch),
        "decode": phase(|p| p.duration_ms.decode),
        "query": phase(|p| p.duration_ms.query),
        "commit": phase(|p| p.duration_ms.commit),
    });
    println!(
        "in-process source -> decode -> SQL -> Delta ({}): {rate:.0} events/s ({} events in {} \
         batches, {elapsed:.2} s, {} rows written)",
        path.display(),
        summary.input_rows,
        summary.batches,
        summary.output_rows
    );
    println!("  time per phase (ms, all batches; decode summed over threads): {phases}");
    let state = reports.last().and_then(|p| p.state_operators.first());
    let peak = memory_kib("VmHWM");
    let mib =
        |kib: Option<u64>| kib.map_or("?".to_string(), |k| format!("{:.0}", k as f64 / 1024.0));
    println!(
        "  memory: peak resident {} MiB, {} MiB of it before the run (the generated log, and \
         what generating it freed that the allocator keeps); state \
         after the last batch: {} rows, {:.0} MiB",
        mib(peak),
        mib(before_run),
        state.map_or(0, |s| s.num_rows_total),
        state.map_or(0, |s| s.memory_used_bytes) as f64 / (1024.0 * 1024.0)
    );
    if let Some(out) = summary_path {
        write_summary(
            out,
            &serde_json::json!({
                "spec": path.display().to_string(),
                "events": records,
                "input_rows": summary.input_rows,
                "output_rows": summary.output_rows,
                "dead_letter_rows": summary.dead_letter_rows,
                "batches": summary.batches,
                "seconds": elapsed,
                "events_per_second": rate,
                "duration_ms": phases,
                "peak_resident_kib": peak,
                "resident_before_run_kib": before_run,
                "state_rows": state.map(|s| s.num_rows_total),
                "state_bytes": state.map(|s| s.memory_used_bytes),
            }),
        )?;
    }
    Ok(())
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB; `None`
/// where the file is not there.
fn memory_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
