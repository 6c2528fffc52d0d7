//! `riskstream serve`: Arrow Flight SQL over the lake until SIGINT or SIGTERM, then a graceful
//! stop (no new calls; running ones finish).

use riskstream_query::flight::{FlightServer, ServeConfig};

use super::CommandError;
use crate::cli::ServeArgs;
use crate::metrics::{self, ServerMetrics};

pub async fn run(args: ServeArgs) -> Result<(), CommandError> {
    let config = ServeConfig::load(
        args.config.as_deref(),
        args.lake.as_deref(),
        args.bind.as_deref(),
    )?;
    let server = FlightServer::bind(&config).await?;
    let addr = server.local_addr()?;
    let scheme = if config.tls.is_some() {
        "grpc+tls"
    } else {
        "grpc"
    };
    eprintln!(
        "Flight SQL on {scheme}://{addr} over {} ({}, read-only)",
        config.lake,
        if config.requires_auth() {
            "authenticated"
        } else {
            "no authentication"
        }
    );
    // After the line above, which clients wait for first.
    if let Some(metrics_addr) = args.metrics_addr {
        let exporter = ServerMetrics::new("flight-sql", server.stats());
        let bound = metrics::serve(metrics_addr, exporter).await?;
        eprintln!("metrics on http://{bound}/metrics");
    }
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
        eprintln!("stopping: finishing the queries in flight");
    };
    server.serve(shutdown).await?;
    Ok(())
}
