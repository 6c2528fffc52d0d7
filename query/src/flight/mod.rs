//! `riskstream serve`: Arrow Flight SQL over the lake, for ADBC, the Flight SQL JDBC driver and
//! the BI tools built on them.

mod auth;
mod config;
mod service;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use auth::Authenticator;
pub use config::{DEFAULT_BIND, ServeConfig, TlsFiles};
pub use service::{LakeFlightService, Limits};
pub use stats::{Outcome, QUERY_SECONDS_BOUNDS, QueryStats, StatsSnapshot};

use crate::error::{QueryError, Result};
use crate::session::LakeSession;
use riskstream_lake::LakeLocation;

/// A bound, not yet serving, Flight SQL server.
pub struct FlightServer {
    service: LakeFlightService,
    listener: tokio::net::TcpListener,
    tls: Option<ServerTlsConfig>,
}

impl FlightServer {
    /// Opens the lake, reads the TLS files and binds the address, so that every mistake shows
    /// before the server says it is listening.
    pub async fn bind(config: &ServeConfig) -> Result<Self> {
        let lake = LakeLocation::open_existing(&config.lake)?;
        let session = Arc::new(LakeSession::open(lake).await?);
        let auth = Authenticator::new(
            config.users.clone(),
            config.tokens.clone(),
            config.token_lifetime,
        );
        let limits = Limits {
            max_rows: config.max_rows,
            query_timeout: config.query_timeout,
        };
        let service = LakeFlightService::new(session, auth, limits)?;
        let tls = match &config.tls {
            Some(files) => {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).map_err(|source| QueryError::Io {
                        what: format!("reading tls file {}", path.display()),
                        source,
                    })
                };
                // Two crypto providers are linked in (see the workspace's rustls pin): say which.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Some(
                    ServerTlsConfig::new()
                        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?)),
                )
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| QueryError::Io {
                what: format!("binding {}", config.bind),
                source,
            })?;
        Ok(Self {
            service,
            listener,
            tls,
        })
    }

    /// The server's query figures, for its metrics.
    pub fn stats(&self) -> Arc<QueryStats> {
        self.service.stats()
    }

    /// The address it listens on (the port the system chose, when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|source| QueryError::Io {
            what: "reading the bound address".to_string(),
            source,
        })
    }

    /// Serves until `shutdown` completes, then stops taking calls and lets running ones finish.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls).map_err(|e| QueryError::Config {
                file: "tls".to_string(),
                key: "tls.cert".to_string(),
                message: e.to_string(),
            })?;
        }
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        builder
            .add_service(
                FlightServiceServer::new(self.service)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(|e| QueryError::Io {
                what: "serving Flight SQL".to_string(),
                source: std::io::Error::other(e),
            })
    }
}
