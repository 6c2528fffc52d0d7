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
/// that mimalloc returns (BENCHMARKS.md, "Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_t` enum of the mimalloc (v3) libmimalloc-sys
/// builds; its Rust bindings do not name it.
const MI_OPTION_PURGE_DELAY: i32 = 15;

/// Freed memory goes back to the system after 100 ms, not mimalloc v3's 1 s. A job frees a batch's buffers every batch; with the default, a job
/// kept what the last seconds of batches freed resident, about 200 MB more at its peak. 10 ms
/// saved a little more memory but cost a fifth of the feature job's speed (BENCHMARKS.md,
/// "Memory"). `MIMALLOC_PURGE_DELAY` still overrides it.
#[expect(unsafe_code, reason = "mimalloc's options are set through its C API")]
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's integer options by its index in `mi_option_t`. Setting
        // options is not thread-safe; this runs first in `main`, before any thread starts, and
        // mimalloc reads the purge delay at each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
    }
}

fn main() -> ExitCode {
    return_freed_memory_promptly();
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
