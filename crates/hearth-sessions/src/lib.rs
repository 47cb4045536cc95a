//! Login sessions: a user of a tenant logs in to an AI CLI tool in a
//! browser VM, and hearth captures the credential and seals it in the
//! vault. This crate holds the providers catalogue (data), the session
//! state machine over the store, the driver that runs one session (its VM,
//! its egress proxy, the capture, the seal, the VM's end) and the
//! reconciler that expires sessions and resumes them after a restart. It
//! knows nothing of HTTP. See `docs/sessions.md`.
//!
//! Every state change is a compare-and-set in the store, so the driver, a
//! cancel and the expiry reconciler racing on one session cannot both win.

pub mod cli;
mod driver;
pub mod egress;
mod egress_settings;
mod error;
pub mod guest;
pub mod providers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_control::controller::{Controller, Scope};
use hearth_store::{SessionChange, SessionFilter, SessionRecord, Store, StoreError};
use hearth_types::session::{EgressConnection, Session, SessionEvent, StartSession};
use hearth_types::{SessionId, SessionState, TenantId, Timestamp};
use hearth_vault::Vault;

pub use self::egress::EgressSettings;
pub use self::error::SessionError;
pub use self::providers::{Catalogue, Provider};

/// Tunables of sessions.
#[derive(Clone, Debug)]
pub struct SessionsConfig {
    /// How long a session lives unless its start asks otherwise.
    pub default_ttl: Duration,
    /// How long the browser VM may take to be ready (a cold browser VM
    /// under TCG takes about 30 s).
    pub readiness_timeout: Duration,
    /// How often the reconciler looks for expired sessions.
    pub tick: Duration,
    /// How many lines of the login command's output a session shows.
    pub output_lines: usize,
    pub egress: EgressSettings,
}

impl SessionsConfig {
    pub fn new(egress: EgressSettings) -> Self {
        SessionsConfig {
            default_ttl: Duration::from_secs(600),
            readiness_timeout: Duration::from_secs(300),
            tick: Duration::from_millis(500),
            output_lines: 50,
            egress,
        }
    }
}

/// The sessions of one server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    controller: Arc<Controller>,
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    catalogue: Catalogue,
    config: SessionsConfig,
    /// The running drivers, by session.
    drivers: Mutex<HashMap<SessionId, tokio::task::JoinHandle<()>>>,
    /// The running drivers of CLI VMs.
    cli: cli::Drivers,
}

impl Sessions {
    pub fn new(
        controller: Arc<Controller>,
        vault: Arc<Vault>,
        catalogue: Catalogue,
        config: SessionsConfig,
    ) -> Sessions {
        let store = controller.store().clone();
        Sessions {
            inner: Arc::new(Inner {
                controller,
                store,
                vault,
                catalogue,
                config,
                drivers: Mutex::default(),
                cli: cli::Drivers::default(),
            }),
        }
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.inner.catalogue
    }

    /// Starts a session for `body.user` of `tenant`: records it, creates
    /// its browser VM and starts its driver. The session as it is now
    /// (`starting`, with its VM).
    pub async fn start(
        &self,
        tenant: &TenantId,
        body: &StartSession,
    ) -> Result<SessionRecord, SessionError> {
        let inner = &self.inner;
        let provider = inner.provider(&body.provider)?.clone();
        let ttl = body.ttl().map_err(SessionError::Invalid)?;
        let now = Timestamp::now();
        let record = SessionRecord {
            id: SessionId::generate(),
            tenant: tenant.clone(),
            user: body.user.clone(),
            provider: body.provider.clone(),
            state: SessionState::Starting,
            vm: None,
            created_at: now,
            updated_at: now,
            expires_at: now.plus(ttl.unwrap_or(inner.config.default_ttl)),
            message: None,
            diagnosis: None,
            credential_version: None,
        };
        match inner.store.insert_session(&record).await {
            Err(StoreError::Duplicate { .. }) => return Err(inner.already_live(&record).await),
            other => other?,
        }
        let scope = tenant_scope(tenant);
        let request = guest::browser_vm(&provider, inner.config.readiness_timeout.as_secs());
        let vm = match inner.controller.create_vm(&scope, request).await {
            Ok(vm) => vm,
            Err(e) => {
                let why = format!("the browser VM could not be created: {e}");
                inner
                    .fail(&record.id, SessionState::Starting, why, None)
                    .await;
                return Err(SessionError::Vm(e));
            }
        };
        let mut change = SessionChange::to(
            SessionState::Starting,
            Timestamp::now(),
            format!("browser VM {} created from image {}", vm.id, provider.image),
        );
        change.vm = Some(vm.id.clone());
        let record = inner
            .store
            .change_session(&record.id, SessionState::Starting, &change)
            .await?;
        self.spawn_driver(record.clone(), provider);
        Ok(record)
    }

    /// The session, with what its login command printed.
    pub async fn get(&self, scope: &Scope, id: &SessionId) -> Result<Session, SessionError> {
        let record = self.inner.visible(scope, id).await?;
        Ok(self.inner.view(record).await)
    }

    /// The sessions the caller may see, newest first.
    pub async fn list(&self, scope: &Scope) -> Result<Vec<Session>, SessionError> {
        let filter = SessionFilter {
            tenant: (!scope.admin).then(|| scope.tenant.clone()),
            live_only: false,
        };
        let records = self.inner.store.list_sessions(&filter).await?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            out.push(self.inner.view(r).await);
        }
        Ok(out)
    }

    pub async fn events(
        &self,
        scope: &Scope,
        id: &SessionId,
    ) -> Result<Vec<SessionEvent>, SessionError> {
        self.inner.visible(scope, id).await?;
        Ok(self.inner.store.session_events(id).await?)
    }

    pub async fn egress(
        &self,
        scope: &Scope,
        id: &SessionId,
    ) -> Result<Vec<EgressConnection>, SessionError> {
        self.inner.visible(scope, id).await?;
        Ok(self.inner.store.egress_connections(id).await?)
    }

    /// Cancels a live session: it ends `cancelled` and its VM is destroyed.
    pub async fn cancel(&self, scope: &Scope, id: &SessionId) -> Result<Session, SessionError> {
        let record = self.inner.visible(scope, id).await?;
        let why = "cancelled by its caller".to_owned();
        let ended = self.inner.end(record, SessionState::Cancelled, why).await?;
        Ok(self.inner.view(ended).await)
    }

    /// Replaces the egress settings of `tenant` (`user: None`; an admin's
    /// call) or of one of its users (an upstream proxy only).
    pub async fn put_egress(
        &self,
        tenant: &TenantId,
        user: Option<&hearth_types::UserName>,
        body: &hearth_types::session::PutEgress,
    ) -> Result<hearth_types::session::EgressSettingsInfo, SessionError> {
        self.inner.put_egress(tenant, user, body).await
    }

    pub async fn egress_settings(
        &self,
        tenant: &TenantId,
        user: Option<&hearth_types::UserName>,
    ) -> Result<Option<hearth_types::session::EgressSettingsInfo>, SessionError> {
        self.inner.egress_of(tenant, user).await
    }

    pub async fn delete_egress(
        &self,
        tenant: &TenantId,
        user: Option<&hearth_types::UserName>,
    ) -> Result<Option<hearth_types::session::EgressSettingsInfo>, SessionError> {
        self.inner.delete_egress(tenant, user).await
    }

    /// Resumes the drivers of live sessions (after a restart), then expires
    /// sessions past their time, every tick, until the task is dropped.
    pub async fn run(self) {
        self.resume().await;
        self.resume_cli().await;
        let mut tick = tokio::time::interval(self.inner.config.tick);
        loop {
            tick.tick().await;
            self.expire_due().await;
            self.inner.reap_drivers();
            self.reap_cli();
        }
    }

    async fn resume(&self) {
        let live = SessionFilter {
            tenant: None,
            live_only: true,
        };
        let records = match self.inner.store.list_sessions(&live).await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %hearth_types::error_chain(&e), "live sessions not resumed");
                return;
            }
        };
        for record in records {
            match self.inner.provider(&record.provider) {
                Ok(provider) => {
                    let provider = provider.clone();
                    self.spawn_driver(record, provider);
                }
                Err(e) => {
                    let why = format!("its provider is gone from this server: {e}");
                    self.inner.fail(&record.id, record.state, why, None).await;
                }
            }
        }
    }

    async fn expire_due(&self) {
        let live = SessionFilter {
            tenant: None,
            live_only: true,
        };
        let Ok(records) = self.inner.store.list_sessions(&live).await else {
            return;
        };
        let now = Timestamp::now();
        for record in records.into_iter().filter(|r| r.expires_at <= now) {
            if record.state == SessionState::Captured {
                continue; // sealed: the driver finishes it.
            }
            let why = format!(
                "nobody finished the login within {} s",
                record.expires_at.since(record.created_at).as_secs()
            );
            if let Err(e) = self.inner.end(record, SessionState::Expired, why).await {
                tracing::debug!(error = %e, "expiry lost a race");
            }
        }
    }

    fn spawn_driver(&self, record: SessionRecord, provider: Provider) {
        let inner = self.inner.clone();
        let id = record.id.clone();
        let task = tokio::spawn(driver::drive(inner, record, provider));
        let mut drivers = self.inner.lock_drivers();
        if let Some(old) = drivers.insert(id, task) {
            old.abort();
        }
    }
}

impl Inner {
    fn provider(&self, name: &hearth_types::ProviderId) -> Result<&Provider, SessionError> {
        self.catalogue
            .get(name)
            .ok_or_else(|| SessionError::UnknownProvider {
                name: name.clone(),
                known: self.catalogue.names().join(", "),
            })
    }

    async fn already_live(&self, wanted: &SessionRecord) -> SessionError {
        let filter = SessionFilter {
            tenant: Some(wanted.tenant.clone()),
            live_only: true,
        };
        let existing = self
            .store
            .list_sessions(&filter)
            .await
            .ok()
            .and_then(|live| {
                live.into_iter()
                    .find(|s| s.user == wanted.user && s.provider == wanted.provider)
            });
        match existing {
            Some(s) => SessionError::AlreadyLive {
                user: wanted.user.clone(),
                provider: wanted.provider.clone(),
                existing: s.id,
            },
            // It ended in between: say so rather than guess an id.
            None => SessionError::Invalid(format!(
                "user {} had a live {} session a moment ago: try again",
                wanted.user, wanted.provider
            )),
        }
    }

    async fn visible(&self, scope: &Scope, id: &SessionId) -> Result<SessionRecord, SessionError> {
        match self.store.session(id).await? {
            Some(r) if scope.admin || r.tenant == scope.tenant => Ok(r),
            _ => Err(SessionError::NotFound(id.clone())),
        }
    }

    /// Ends a live session (`expired`, `cancelled`) and destroys its VM.
    async fn end(
        &self,
        record: SessionRecord,
        to: SessionState,
        why: String,
    ) -> Result<SessionRecord, SessionError> {
        if !record.state.is_live() || !record.state.may_become(to) {
            return Err(SessionError::Ended {
                id: record.id,
                state: record.state.to_string(),
            });
        }
        let mut change = SessionChange::to(to, Timestamp::now(), why.clone());
        change.message = Some(why);
        let ended = self
            .store
            .change_session(&record.id, record.state, &change)
            .await?;
        self.stop_driver(&ended.id);
        if let Some(vm) = &ended.vm {
            driver::destroy_vm(self, &ended.id, vm).await;
        }
        Ok(ended)
    }

    /// Moves a session to `failed` with `why`; a lost race is left alone.
    async fn fail(
        &self,
        id: &SessionId,
        from: SessionState,
        why: String,
        diagnosis: Option<hearth_types::api::Diagnosis>,
    ) {
        let mut change = SessionChange::to(SessionState::Failed, Timestamp::now(), why.clone());
        change.message = Some(why);
        change.diagnosis = diagnosis;
        if let Err(e) = self.store.change_session(id, from, &change).await {
            tracing::debug!(session = %id, error = %e, "the failure lost a race");
        }
    }

    /// The API's view: the record and the login command's last lines.
    async fn view(&self, r: SessionRecord) -> Session {
        let login_output = match &r.vm {
            Some(vm) => self.login_output(vm).await,
            None => Vec::new(),
        };
        Session {
            id: r.id,
            tenant: r.tenant,
            user: r.user,
            provider: r.provider,
            state: r.state,
            vm: r.vm,
            created_at: r.created_at,
            updated_at: r.updated_at,
            expires_at: r.expires_at,
            message: r.message,
            diagnosis: r.diagnosis,
            credential_version: r.credential_version,
            login_output,
            viewer: None,
        }
    }

    async fn login_output(&self, vm: &hearth_types::VmId) -> Vec<String> {
        let logs = self
            .controller
            .service_logs(&admin(), vm, guest::LOGIN_SERVICE, self.config.output_lines)
            .await;
        logs.map(|l| l.lines.into_iter().map(|l| l.line).collect())
            .unwrap_or_default()
    }

    fn stop_driver(&self, id: &SessionId) {
        if let Some(task) = self.lock_drivers().remove(id) {
            task.abort();
        }
    }

    fn reap_drivers(&self) {
        self.lock_drivers().retain(|_, task| !task.is_finished());
    }

    fn lock_drivers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SessionId, tokio::task::JoinHandle<()>>> {
        self.drivers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The scope a session's VM is created in: its tenant's.
fn tenant_scope(tenant: &TenantId) -> Scope {
    Scope {
        tenant: tenant.clone(),
        admin: false,
    }
}

/// The driver's own view of VMs (it has checked the session's tenant).
fn admin() -> Scope {
    Scope {
        tenant: "hearth".parse().expect("a valid tenant id"),
        admin: true,
    }
}
