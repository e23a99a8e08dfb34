//! Connection startup: protocol negotiation, the login policy of `auth`
//! (SCRAM-SHA-256 against stored verifiers, optional loopback trust, TLS
//! requirement, per-address limit on failed logins), and creating the
//! engine session for the connection.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use futures::SinkExt;
use parking_lot::Mutex;
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, METADATA_DATABASE, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tracing::{info, warn};

use quiver_auth::scram::{ClientFirst, Exchange, Verifier};
use quiver_auth::{Admit, AuthConfig, LoginLimiter};
use quiver_common::sqlstate::{self, SqlState, SqlStateError};

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

use super::error::to_pgwire;
use quiver_planner::{Engine, QueryError};

pub struct QuiverStartup {
    pub engine: Arc<Engine>,
    pub pids: RandomPidSecretKeyGenerator,
    pub auth: Arc<Logins>,
}

/// The login policy with its shared state.
#[derive(Debug)]
pub struct Logins {
    pub config: AuthConfig,
    pub limiter: LoginLimiter,
    /// Salts the stand-in verifiers of unknown users.
    mock_secret: [u8; 32],
}

impl Logins {
    pub fn new(config: AuthConfig) -> Logins {
        Logins {
            limiter: LoginLimiter::new(config.max_failed_logins, config.failed_login_interval),
            config,
            mock_secret: quiver_auth::scram::random_bytes::<32>(),
        }
    }
}

/// A SCRAM exchange in progress on one connection.
struct Pending {
    exchange: Mutex<Option<Exchange>>,
    /// Whether the user exists and has a password (else the exchange fails).
    genuine: bool,
}

struct ServerParameters {
    application_name: Option<String>,
    superuser: bool,
}

impl ServerParameterProvider for ServerParameters {
    fn server_parameters<C>(&self, _client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut p = HashMap::new();
        p.insert(
            "server_version".into(),
            quiver_common::SERVER_VERSION.into(),
        );
        p.insert("server_encoding".into(), "UTF8".into());
        p.insert("client_encoding".into(), "UTF8".into());
        p.insert("DateStyle".into(), "ISO, MDY".into());
        p.insert("TimeZone".into(), "UTC".into());
        p.insert("integer_datetimes".into(), "on".into());
        p.insert("standard_conforming_strings".into(), "on".into());
        p.insert("IntervalStyle".into(), "postgres".into());
        p.insert(
            "is_superuser".into(),
            if self.superuser { "on" } else { "off" }.into(),
        );
        p.insert(
            "application_name".into(),
            self.application_name.clone().unwrap_or_default(),
        );
        Some(p)
    }
}

/// A password login in progress, holding a token of the login limiter
/// until it ends (a connection that goes away mid-exchange ends it too,
/// as not failed: it guessed nothing).
struct Attempt {
    logins: Arc<Logins>,
    ip: std::net::IpAddr,
    open: std::sync::atomic::AtomicBool,
}

impl Attempt {
    fn end(&self, failed: bool) {
        if self.open.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.logins.limiter.end(self.ip, failed);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.end(false);
    }
}

/// A SASLInitialResponse's mechanism and data, read with every length
/// checked (pgwire's decoder panicked on a message that ends early).
fn sasl_initial_response(msg: PasswordMessageFamily) -> PgWireResult<(String, Vec<u8>)> {
    let malformed = || {
        login_error(
            sqlstate::PROTOCOL_VIOLATION,
            "malformed SASL message".into(),
        )
    };
    let body = match msg {
        PasswordMessageFamily::Raw(body) => body,
        PasswordMessageFamily::SASLInitialResponse(m) => {
            return Ok((
                m.auth_method,
                m.data.map(|d| d.to_vec()).unwrap_or_default(),
            ));
        }
        _ => return Err(malformed()),
    };
    let nul = body.iter().position(|&b| b == 0).ok_or_else(malformed)?;
    let method = std::str::from_utf8(&body[..nul])
        .map_err(|_| malformed())?
        .to_string();
    let rest = &body[nul + 1..];
    let len = rest.get(..4).ok_or_else(malformed)?;
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let data = match len {
        -1 => Vec::new(),
        n => {
            let n = usize::try_from(n).map_err(|_| malformed())?;
            if rest.len() - 4 != n {
                return Err(malformed());
            }
            rest[4..].to_vec()
        }
    };
    Ok((method, data))
}

fn login_error(code: SqlState, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.code().to_string(),
        message,
    )))
}

fn password_failed(user: &str) -> PgWireError {
    login_error(
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    )
}

impl QuiverStartup {
    fn user_of<C: ClientInfo>(client: &C) -> String {
        client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default()
    }

    /// The user is who they say: open the session and say so.
    async fn complete<C>(&self, client: &mut C, method: &str) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // The password was right: the attempt gives its token back.
        if let Some(attempt) = client.session_extensions().get::<Attempt>() {
            attempt.end(false);
        }
        let addr = client.socket_addr();
        let metadata = client.metadata();
        let user = Self::user_of(client);
        let database = metadata
            .get(METADATA_DATABASE)
            .cloned()
            .unwrap_or_else(|| quiver_catalog::DEFAULT_DATABASE.to_string());
        let application_name = metadata.get("application_name").cloned();
        let session = self.engine.new_session(&user, &database).map_err(fatal)?;
        // Settings given at startup (pgjdbc's extra_float_digits, psql's
        // PGOPTIONS="-c statement_timeout=5s") are the session's, as SET
        // would make them; one refused ends the connection, as in
        // PostgreSQL.
        for (name, value) in startup_settings(metadata).map_err(fatal)? {
            match session.set_var(&name, &value) {
                Ok(()) => {}
                // A client's own zone (pgjdbc sends the JVM's): quiver's
                // sessions are in UTC, which ParameterStatus tells it.
                Err(_) if name.eq_ignore_ascii_case("timezone") => {
                    warn!(%addr, value = %value.escape_debug(), "startup TimeZone kept at UTC");
                }
                Err(e) => return Err(fatal(e)),
            }
        }
        let superuser = self.engine.catalog().security(|s| s.is_superuser(&user));
        let (pid, secret) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        // Cancel requests find the session here (pgwire's own cancel
        // would drop a statement's future anywhere, a write's included).
        let registered = self.engine.activity().register(
            quiver_planner::activity::Connecting {
                pid,
                secret: secret.to_bytes().to_vec(),
                user: user.clone(),
                database: database.clone(),
                application_name: application_name.clone().unwrap_or_default(),
                client_addr: addr.ip().to_string(),
            },
            session.interrupt().clone(),
        );
        client.session_extensions().insert(registered);
        client.session_extensions().insert(session);
        let tls = client.is_secure();
        info!(%addr, user = %user.escape_debug(), database = %database.escape_debug(), method, tls, "connection authenticated");
        finish_authentication(
            client,
            &ServerParameters {
                application_name,
                superuser,
            },
        )
        .await
    }

    async fn on_password<C>(&self, client: &mut C, msg: PasswordMessageFamily) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let addr = client.socket_addr();
        let user = Self::user_of(client);
        let Some(pending) = client.session_extensions().get::<Pending>() else {
            // client-first
            let (method, data) = sasl_initial_response(msg)?;
            if method != SCRAM_SHA_256 {
                return Err(login_error(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    format!(
                        "authentication method {} is not supported: use SCRAM-SHA-256",
                        method.escape_debug()
                    ),
                ));
            }
            let first = ClientFirst::parse(&data).map_err(|e| {
                warn!(%addr, user = %user.escape_debug(), error = %e, "login failed");
                login_error(e.sqlstate(), format!("invalid SCRAM exchange: {e}"))
            })?;
            let known = self
                .engine
                .catalog()
                .security(|s| s.user(&user).and_then(|u| u.verifier.clone()));
            let genuine = known.is_some();
            let verifier = known.unwrap_or_else(|| Verifier::mock(&user, &self.auth.mock_secret));
            let (exchange, server_first) = Exchange::start(first, verifier);
            client.session_extensions().insert(Pending {
                exchange: Mutex::new(Some(exchange)),
                genuine,
            });
            client
                .send(PgWireBackendMessage::Authentication(
                    Authentication::SASLContinue(server_first.into_bytes().into()),
                ))
                .await?;
            return Ok(());
        };
        let response = msg.into_sasl_response()?;
        let exchange = pending.exchange.lock().take();
        let Some(exchange) = exchange else {
            return Err(login_error(
                sqlstate::PROTOCOL_VIOLATION,
                "unexpected SCRAM message".into(),
            ));
        };
        let outcome = exchange.finish(&response.data);
        match outcome {
            Ok(server_final) if pending.genuine => {
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLFinal(server_final.into_bytes().into()),
                    ))
                    .await?;
                self.complete(client, "scram-sha-256").await
            }
            result => {
                let reason = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "no such user or no password".to_string(),
                };
                if let Some(attempt) = client.session_extensions().get::<Attempt>() {
                    attempt.end(true);
                }
                warn!(%addr, user = %user.escape_debug(), reason, "login failed");
                Err(password_failed(&user))
            }
        }
    }
}

#[async_trait]
impl StartupHandler for QuiverStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let startup = match message {
            PgWireFrontendMessage::Startup(startup) => startup,
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                return self.on_password(client, msg).await;
            }
            _ => return Ok(()),
        };
        protocol_negotiation(client, &startup).await?;
        save_startup_parameters_to_metadata(client, &startup);
        let addr = client.socket_addr();
        let loopback = quiver_auth::is_loopback(&addr);
        if self.auth.config.require_tls && !loopback && !client.is_secure() {
            return Err(login_error(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                format!(
                    "connections from {} must use TLS: connect with sslmode=require",
                    addr.ip()
                ),
            ));
        }
        let user = Self::user_of(client);
        if user.is_empty() {
            return Err(login_error(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                "no user name given".into(),
            ));
        }
        if self.auth.config.loopback_trust && loopback {
            if self.engine.catalog().security(|s| s.user(&user).is_some()) {
                return self.complete(client, "trust (loopback)").await;
            }
            return Err(login_error(
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                format!("role \"{user}\" does not exist"),
            ));
        }
        // A password attempt holds one of its address's tokens until it
        // ends (the login timeout bounds the wait).
        loop {
            match self.auth.limiter.begin(addr.ip()) {
                Admit::Go => break,
                Admit::Wait => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                Admit::Refused(wait) => {
                    warn!(%addr, user = %user.escape_debug(), "login refused: too many failed logins");
                    return Err(login_error(
                        sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                        format!(
                            "too many failed logins from {}: try again in {} s",
                            addr.ip(),
                            wait.as_secs().max(1)
                        ),
                    ));
                }
            }
        }
        client.session_extensions().insert(Attempt {
            logins: self.auth.clone(),
            ip: addr.ip(),
            open: std::sync::atomic::AtomicBool::new(true),
        });
        client.set_state(PgWireConnectionState::AuthenticationInProgress);
        client
            .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                vec![SCRAM_SHA_256.to_string()],
            )))
            .await?;
        Ok(())
    }
}

/// `e` as the FATAL error that ends a connection being set up.
fn fatal(e: QueryError) -> PgWireError {
    let PgWireError::UserError(mut i) = to_pgwire(e) else {
        return login_error(sqlstate::INTERNAL_ERROR, "session setup failed".into());
    };
    i.severity = "FATAL".into();
    PgWireError::UserError(i)
}

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "replication", "options"];

/// The settings a startup packet gives: those in `options` first
/// (`-c name=value`, `-cname=value`, `--name=value`; `\ ` is a space in a
/// value; `-` in a name is `_`), then the other parameters, which win.
fn startup_settings(
    metadata: &HashMap<String, String>,
) -> Result<Vec<(String, String)>, QueryError> {
    let mut out = Vec::new();
    if let Some(options) = metadata.get("options") {
        out.extend(parse_options(options)?);
    }
    let mut given: Vec<(&String, &String)> = metadata
        .iter()
        .filter(|(k, _)| !NOT_SETTINGS.contains(&k.to_ascii_lowercase().as_str()))
        .collect();
    given.sort();
    out.extend(given.into_iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(out)
}

/// PostgreSQL's `options` startup parameter: arguments split at unescaped
/// spaces, each `-c name=value` (or `-cname=value`) or `--name=value`.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, QueryError> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    let invalid = |arg: &str| {
        QueryError::InvalidParameter(format!(
            "invalid command-line argument for server process: {arg} (quiver takes -c name=value and --name=value in options)"
        ))
    };
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let pair = if arg == "-c" {
            args.next().ok_or_else(|| invalid(&arg))?
        } else if let Some(rest) = arg.strip_prefix("--").or_else(|| arg.strip_prefix("-c")) {
            rest.to_string()
        } else {
            return Err(invalid(&arg));
        };
        let Some((name, value)) = pair.split_once('=') else {
            return Err(invalid(&arg));
        };
        if name.is_empty() {
            return Err(invalid(&arg));
        }
        out.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod options_tests {
    use super::*;

    #[test]
    fn options_are_read_as_postgres_reads_them() {
        let got = parse_options(
            r"-c statement-timeout=5s --extra-float-digits=0 -capplication_name=a\ b",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("statement_timeout".to_string(), "5s".to_string()),
                ("extra_float_digits".to_string(), "0".to_string()),
                ("application_name".to_string(), "a b".to_string()),
            ]
        );
        assert!(parse_options("").unwrap().is_empty());
        for bad in ["-x", "-c", "-c novalue", "--=1", "plain"] {
            assert!(parse_options(bad).is_err(), "{bad}");
        }
    }
}
