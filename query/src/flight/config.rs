//! `riskstream serve`'s settings: a TOML file (`--config`), with the lake and address also on the
//! command line. Every problem names the file and the key.
//!
//! ```toml
//! lake = "s3://lake/prod"
//! bind = "0.0.0.0:50051"
//!
//! [auth]
//! users = [{ name = "analyst", password_env = "ANALYST_PASSWORD" }]
//! tokens_env = ["DASHBOARD_TOKEN"]
//!
//! [tls]
//! cert = "/etc/riskstream/server.crt"
//! key = "/etc/riskstream/server.key"
//!
//! [limits]
//! max_rows = 10000000
//! query_timeout = "10m"
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{QueryError, Result};

/// What the server needs to start.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The lake root.
    pub lake: String,
    /// Where to listen.
    pub bind: SocketAddr,
    /// Who may query. Empty: anyone (allowed only on a loopback address).
    pub users: HashMap<String, String>,
    /// Bearer tokens accepted as they are.
    pub tokens: Vec<String>,
    /// Serve anonymous clients on a non-loopback address (`auth.allow_anonymous`).
    pub allow_anonymous: bool,
    /// TLS certificate and key (PEM), when TLS is on.
    pub tls: Option<TlsFiles>,
    /// A result with more rows than this fails (it does not come back cut short).
    pub max_rows: Option<u64>,
    /// A query running longer than this is stopped.
    pub query_timeout: Option<Duration>,
    /// How long a token issued by the handshake stays valid.
    pub token_lifetime: Duration,
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    lake: Option<String>,
    bind: Option<String>,
    #[serde(default)]
    auth: AuthFile,
    tls: Option<TlsFile>,
    #[serde(default)]
    limits: LimitsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    users: Vec<UserFile>,
    #[serde(default)]
    tokens: Vec<String>,
    #[serde(default)]
    tokens_env: Vec<String>,
    #[serde(default)]
    allow_anonymous: bool,
    token_lifetime: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    name: String,
    password: Option<String>,
    password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_rows: Option<u64>,
    query_timeout: Option<String>,
}

/// The default address: loopback, the port Flight SQL examples use.
pub const DEFAULT_BIND: &str = "127.0.0.1:50051";

impl ServeConfig {
    /// Reads `config` (when given) and applies the command line's `lake` and `bind` over it.
    pub fn load(config: Option<&Path>, lake: Option<&str>, bind: Option<&str>) -> Result<Self> {
        Self::load_with_env(config, lake, bind, |var| std::env::var(var).ok())
    }

    /// [`ServeConfig::load`], reading `*_env` keys' variables through `env`.
    pub fn load_with_env(
        config: Option<&Path>,
        lake: Option<&str>,
        bind: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let (file_name, file) = match config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| QueryError::Io {
                    what: format!("reading {}", path.display()),
                    source,
                })?;
                let file: File = toml::from_str(&text).map_err(|e| QueryError::Config {
                    file: path.display().to_string(),
                    key: e
                        .span()
                        .map(|s| text[s].lines().next().unwrap_or_default().to_string())
                        .unwrap_or_default(),
                    message: e.message().to_string(),
                })?;
                (path.display().to_string(), file)
            }
            None => ("command line".to_string(), File::default()),
        };
        let err = |key: &str, message: String| QueryError::Config {
            file: file_name.clone(),
            key: key.to_string(),
            message,
        };
        let lake = lake
            .map(str::to_string)
            .or(file.lake)
            .unwrap_or_else(|| "./lake-data".to_string());
        let bind_text = bind
            .map(str::to_string)
            .or(file.bind)
            .unwrap_or_else(|| DEFAULT_BIND.to_string());
        let bind: SocketAddr = bind_text
            .parse()
            .map_err(|e| err("bind", format!("`{bind_text}` is not HOST:PORT: {e}")))?;
        let from_env = |key: &str, var: &str| {
            env(var).ok_or_else(|| err(key, format!("environment variable {var} is not set")))
        };
        let mut users = HashMap::new();
        for user in file.auth.users {
            let password = match (user.password, user.password_env) {
                (Some(p), None) => p,
                (None, Some(var)) => from_env("auth.users.password_env", &var)?,
                _ => {
                    return Err(err(
                        "auth.users",
                        format!("user `{}`: give one of password, password_env", user.name),
                    ));
                }
            };
            if password.is_empty() {
                return Err(err(
                    "auth.users",
                    format!("user `{}` has an empty password", user.name),
                ));
            }
            users.insert(user.name, password);
        }
        let mut tokens = file.auth.tokens;
        for var in &file.auth.tokens_env {
            tokens.push(from_env("auth.tokens_env", var)?);
        }
        if tokens.iter().any(|t| t.len() < 16) {
            return Err(err(
                "auth.tokens",
                "a token must have at least 16 characters".to_string(),
            ));
        }
        let duration = |key: &str, text: &str| {
            humantime::parse_duration(text)
                .map_err(|e| err(key, format!("`{text}` is not a duration such as 10m: {e}")))
        };
        let token_lifetime = match &file.auth.token_lifetime {
            Some(t) => duration("auth.token_lifetime", t)?,
            None => Duration::from_secs(12 * 3600),
        };
        let query_timeout = file
            .limits
            .query_timeout
            .as_deref()
            .map(|t| duration("limits.query_timeout", t))
            .transpose()?;
        let open = users.is_empty() && tokens.is_empty();
        if open && !bind.ip().is_loopback() && !file.auth.allow_anonymous {
            return Err(err(
                "auth",
                format!(
                    "no users or tokens, and {bind} is not a loopback address: add [auth] users \
                     or tokens, or set auth.allow_anonymous = true"
                ),
            ));
        }
        Ok(Self {
            lake,
            bind,
            users,
            tokens,
            allow_anonymous: file.auth.allow_anonymous,
            tls: file.tls.map(|t| TlsFiles {
                cert: t.cert,
                key: t.key,
            }),
            max_rows: file.limits.max_rows,
            query_timeout,
            token_lifetime,
        })
    }

    /// True when clients must authenticate.
    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty() || !self.tokens.is_empty()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load(text: &str, bind: Option<&str>) -> Result<ServeConfig> {
        let dir = tempfile::tempdir().map_err(|source| QueryError::Io {
            what: "tempdir".into(),
            source,
        })?;
        let path = dir.path().join("serve.toml");
        std::fs::write(&path, text).map_err(|source| QueryError::Io {
            what: "write".into(),
            source,
        })?;
        ServeConfig::load(Some(&path), None, bind)
    }

    #[test]
    fn reads_users_tokens_and_limits() {
        let config = load(
            r#"
            lake = "/data/lake"
            [auth]
            users = [{ name = "analyst", password = "s3cret" }]
            tokens = ["0123456789abcdef0123"]
            [limits]
            max_rows = 100
            query_timeout = "2m"
            "#,
            None,
        )
        .unwrap();
        assert_eq!(config.lake, "/data/lake");
        assert_eq!(config.users["analyst"], "s3cret");
        assert_eq!(config.max_rows, Some(100));
        assert_eq!(config.query_timeout, Some(Duration::from_secs(120)));
        assert!(config.requires_auth());
    }

    #[test]
    fn bad_settings_name_the_key() {
        let err = load("[limits]\nquery_timeout = \"soon\"\n", None).unwrap_err();
        assert!(err.to_string().contains("`limits.query_timeout`"), "{err}");
        let err = load("[auth]\nuserz = []\n", None).unwrap_err();
        assert!(err.to_string().contains("userz"), "{err}");
        let err = load("[auth]\ntokens = [\"short\"]\n", None).unwrap_err();
        assert!(err.to_string().contains("`auth.tokens`"), "{err}");
    }

    #[test]
    fn the_shipped_config_loads() {
        // The compose stack's config, with the password it reads from the environment.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/serve.toml");
        let config = ServeConfig::load_with_env(Some(Path::new(path)), None, None, |var| {
            (var == "RISKSTREAM_ANALYST_PASSWORD").then(|| "compose-password".to_string())
        })
        .unwrap();
        assert_eq!(config.lake, "s3://lake/demo");
        assert_eq!(config.users["analyst"], "compose-password");
        assert!(!config.bind.ip().is_loopback());
    }

    #[test]
    fn anonymous_only_on_loopback_unless_allowed() {
        let err = load("", Some("0.0.0.0:50051")).unwrap_err();
        assert!(err.to_string().contains("allow_anonymous"), "{err}");
        assert!(load("", Some("127.0.0.1:50051")).is_ok());
        assert!(load("[auth]\nallow_anonymous = true\n", Some("0.0.0.0:50051")).is_ok());
    }
}
