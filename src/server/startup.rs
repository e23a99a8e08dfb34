//! Connection startup: protocol negotiation, the login policy of `auth`,
//! and creating the engine session for the connection.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionHandle, ConnectionManager, METADATA_DATABASE, METADATA_USER,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tracing::info;

use super::error::to_pgwire;
use crate::planner::Engine;

pub struct QuiverStartup {
    pub engine: Arc<Engine>,
    pub manager: Arc<ConnectionManager>,
    pub pids: RandomPidSecretKeyGenerator,
}

struct ServerParameters {
    application_name: Option<String>,
}

impl ServerParameterProvider for ServerParameters {
    fn server_parameters<C>(&self, _client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut p = HashMap::new();
        p.insert("server_version".into(), crate::SERVER_VERSION.into());
        p.insert("server_encoding".into(), "UTF8".into());
        p.insert("client_encoding".into(), "UTF8".into());
        p.insert("DateStyle".into(), "ISO, MDY".into());
        p.insert("TimeZone".into(), "UTC".into());
        p.insert("integer_datetimes".into(), "on".into());
        p.insert("standard_conforming_strings".into(), "on".into());
        p.insert("IntervalStyle".into(), "postgres".into());
        p.insert("is_superuser".into(), "on".into());
        p.insert(
            "application_name".into(),
            self.application_name.clone().unwrap_or_default(),
        );
        Some(p)
    }
}

fn login_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message,
    )))
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
        let PgWireFrontendMessage::Startup(ref startup) = message else {
            return Ok(());
        };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let addr = client.socket_addr();
        if !crate::auth::trust_allowed(&addr) {
            return Err(login_error(
                "28000",
                format!(
                    "no login method accepts connections from {}: only loopback clients may connect until authentication is configured",
                    addr.ip()
                ),
            ));
        }
        let metadata = client.metadata();
        let user = metadata
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_else(|| "quiver".to_string());
        let database = metadata
            .get(METADATA_DATABASE)
            .cloned()
            .unwrap_or_else(|| crate::catalog::DEFAULT_DATABASE.to_string());
        let application_name = metadata.get("application_name").cloned();
        let session = self.engine.new_session(&user, &database).map_err(|e| {
            let PgWireError::UserError(mut i) = to_pgwire(e) else {
                return login_error("XX000", "session setup failed".into());
            };
            i.severity = "FATAL".into();
            PgWireError::UserError(i)
        })?;
        let (pid, secret) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        let (handle, guard) = self.manager.register(pid, secret);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert(guard);
        client.session_extensions().insert(session);
        info!(%addr, %user, %database, "connection authenticated (trust, loopback)");
        finish_authentication(client, &ServerParameters { application_name }).await
    }
}
