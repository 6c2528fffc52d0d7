//! `riskstream run JOB.toml`: a streaming job until its trigger ends it or a signal stops it.
//! SIGINT or SIGTERM lets the batch in flight commit, then exits 0; a second one exits at once.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use riskstream_jobs::stream::progress::QueryProgress;
use riskstream_jobs::stream::runner::{self, RunObserver, RunOptions};
use riskstream_jobs::stream::spec::{JobSpec, Trigger};

use super::CommandError;
use crate::cli::RunArgs;
use crate::metrics::{self, Exporter, JobMetrics};

pub async fn run(args: RunArgs) -> Result<(), CommandError> {
    let mut spec = JobSpec::load(&args.spec)?;
    if let Some(partitions) = &args.partitions {
        // Each process of a scaled-out job owns its partitions' offsets, so it needs a checkpoint
        // (and a query id, the Delta txn appId) of its own.
        let names: Vec<String> = partitions.0.iter().map(i32::to_string).collect();
        spec.checkpoint_location = format!(
            "{}/partitions-{}",
            spec.checkpoint_location.trim_end_matches('/'),
            names.join("_")
        );
    }
    let trigger = if args.available_now {
        Trigger::AvailableNow
    } else {
        spec.trigger
    };
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&stop))?;

    let status = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar.set_message(format!("{}: starting", spec.name));
        bar
    });
    let name = spec.name.clone();
    let metrics = JobMetrics::new(&name);
    if let Some(addr) = args.metrics_addr {
        let bound = metrics::serve(addr, Arc::clone(&metrics) as Arc<dyn Exporter>).await?;
        eprintln!("metrics on http://{bound}/metrics");
    }
    let options = RunOptions {
        spec,
        trigger,
        partitions: args.partitions.map(|p| p.0),
        stop,
    };
    let observer = Observer {
        metrics,
        status: &status,
        name: &name,
    };
    let summary = runner::run(options, observer).await;
    if let Some(bar) = &status {
        bar.finish_and_clear();
    }
    let summary = summary?;
    println!(
        "query {}: {} batches ({} replayed), {} records read, {} rows written, {} dead letters",
        summary.query_id,
        summary.batches,
        summary.replayed_batches,
        summary.input_rows,
        summary.output_rows,
        summary.dead_letter_rows
    );
    Ok(())
}

/// Hears the run: the metrics and the terminal's status line.
struct Observer<'a> {
    metrics: Arc<JobMetrics>,
    status: &'a Option<ProgressBar>,
    name: &'a str,
}

impl RunObserver for Observer<'_> {
    fn started(&mut self, _query_id: &str) {
        self.metrics.start();
    }

    fn progress(&mut self, p: &QueryProgress) {
        self.metrics.observe(p);
        if let Some(bar) = self.status {
            bar.set_message(format!(
                "{}: batch {} · {} rows in {} ms · {:.0} rows/s · {} dead letters",
                self.name,
                p.batch_id,
                p.num_input_rows,
                p.batch_duration,
                p.processed_rows_per_second,
                p.sink.num_dead_letter_rows
            ));
        }
    }
}

/// The first SIGINT/SIGTERM asks the runner to stop after the batch in flight; the second exits.
fn watch_signals(stop: Arc<AtomicBool>) -> Result<(), CommandError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("second signal: exiting without waiting for the batch in flight");
                std::process::exit(130);
            }
            eprintln!("stopping after the batch in flight commits (signal again to exit now)");
        }
    });
    Ok(())
}
