//! The `riskstream` command: generate events, run the embedded demo, run streaming jobs, query
//! the lake.

mod cli;
mod commands;
mod metrics;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: a job's state is millions of small per-key allocations
/// that grow and shrink from several threads, and glibc's per-thread arenas kept freed memory
/// that mimalloc returns (BENCHMARKS.md, "Memory"). Its own purge delay (freed memory goes back
/// after 1 s) is kept: returning it sooner cost a tenth of the jobs' speed in page faults and
/// zeroing (BENCHMARKS.md, "The allocator's own purge delay").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for them on its arenas
/// and gives freed memory back after its purge delay in pieces smaller than a huge page; the
/// next touch of such a piece faults in a whole 2 MiB page, zeroed by the kernel: a fifth of a
/// feature job's profile. Hash aggregations, whose tables are read at random, lose up to a
/// tenth without huge pages; feature jobs gain more (BENCHMARKS.md, "Window groups on every
/// core, and huge pages off").
fn small_pages_only() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        // Only speed depends on it.
        tracing::debug!("cannot turn transparent huge pages off: {e}");
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The demo prints its own summary; a job's progress lines (one per batch of each of its jobs)
    // are for `riskstream run`.
    let progress = if matches!(cli.command, cli::Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(
        |_| // The Delta kernel logs an error for every table it does not find, which is how new tables
        // start: not worth a line.
        tracing_subscriber::EnvFilter::new(format!(
            "warn,riskstream::progress={progress},riskstream::models=info,buoyant_kernel::snapshot::builder=off"
        )),
    );
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        cli::LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    small_pages_only();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
