//! The SQLite [`Store`]: one file in the data directory. It is opened in WAL
//! mode, so readers never wait for the writer, and every operation that
//! reads before it writes runs in one `BEGIN IMMEDIATE` transaction, so two
//! controllers (or a controller and a CLI) sharing the file cannot both win
//! the same compare-and-set. `docs/store.md` describes the schema.
//!
//! One connection behind a mutex: SQLite calls take microseconds, so async
//! methods run them inline, and the lock is never held across an `.await`.

mod agent;
mod archives;
mod cells;
mod cli_vms;
mod credentials;
mod egress_refusals;
mod egress_settings;
mod error;
mod jobs;
mod migrate;
mod net_slots;
mod pools;
mod sessions;
mod snapshots;
mod tenant_network;
mod tokens;
mod viewer_links;
mod vms;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use hearth_types::api::VmEvent;
use hearth_types::{ProviderId, TenantId, Timestamp, UserName, VmId, VmState};
use rusqlite::Connection;

use self::error::Fail;
pub use self::error::SqliteError;
pub use self::migrate::SCHEMA_VERSION;
use hearth_types::guest::GuestConfig;

use crate::{
    AgentHello, AgentRecord, AgentStatus, ArchiveRecord, Job, NewAgentRecord, NewJob, ProcessRef,
    ServiceLine, StateChange, Store, StoreError, TokenRecord, ViewerLinkRecord, VmFilter, VmRecord,
};
use crate::{CliVmRecord, CliVmStore};
use crate::{CredentialMeta, CredentialOwner, CredentialRecord, CredentialStore, Rewrap};
use crate::{EgressSettingsRecord, EgressSettingsStore};
use crate::{SessionChange, SessionFilter, SessionRecord, SessionStore};
use hearth_types::session::{EgressConnection, SessionEvent};
use hearth_types::{SessionId, SessionState};

/// How long a statement waits for another process's write lock before
/// failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// hearth's state in a SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    /// The file, or `:memory:`; for messages.
    location: String,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and its directory if
    /// needed, and migrates it to [`SCHEMA_VERSION`]. A store written by a
    /// newer hearth is refused with [`StoreError::Corrupt`].
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SqliteError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let location = path.display().to_string();
        let conn = Connection::open(path)
            .and_then(|conn| configure(&conn, true).map(|()| conn))
            .map_err(|e| {
                Fail::from(e).into_store(format_args!("opening the store at {location}"))
            })?;
        Self::migrated(conn, location)
    }

    /// A private store that vanishes when dropped: for tests of code that
    /// needs a `Store`. Same schema and behaviour, without WAL.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let location = ":memory:".to_owned();
        let conn = Connection::open_in_memory()
            .and_then(|conn| configure(&conn, false).map(|()| conn))
            .map_err(|e| Fail::from(e).into_store("opening an in-memory store"))?;
        Self::migrated(conn, location)
    }

    fn migrated(mut conn: Connection, location: String) -> Result<SqliteStore, StoreError> {
        migrate::migrate(&mut conn, &location, migrate::MIGRATIONS)?;
        Ok(SqliteStore {
            location,
            conn: Mutex::new(conn),
        })
    }

    /// The newest migration applied to the file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.run("reading the schema version", |conn| {
            Ok(migrate::current_version(conn)?)
        })
    }

    /// Runs one operation on the connection; `doing` names it if SQLite
    /// fails ("inserting VM vm-1").
    fn run<T>(
        &self,
        doing: impl fmt::Display,
        op: impl FnOnce(&mut Connection) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        op(&mut self.lock())
            .map_err(|fail| fail.into_store(format_args!("{doing} in {}", self.location)))
    }

    /// A panic while the lock was held happened between SQLite calls, and
    /// any open transaction was rolled back when its guard dropped, so the
    /// connection behind a poisoned lock is still sound.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Set first thing on every connection, before migrations: the busy
/// timeout, so that a second process (`hearth token create` while `hearth
/// serve` starts) waits for the first's lock instead of failing.
fn configure(conn: &Connection, wal: bool) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
    if wal {
        let mode = wal_mode(conn)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                mode,
                "SQLite refused WAL mode; readers will wait for writers"
            );
        }
    }
    Ok(())
}

/// `PRAGMA journal_mode = WAL`, retried while another connection holds the
/// file, up to [`BUSY_TIMEOUT`]: switching a new file to WAL needs an
/// exclusive lock, and SQLite answers "database is locked" at once there
/// rather than calling the busy handler.
fn wal_mode(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)) {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            answer => return answer,
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_vm(&self, vm: &VmRecord) -> Result<(), StoreError> {
        self.run(format_args!("inserting VM {}", vm.id()), |c| {
            vms::insert(c, vm)
        })
    }

    async fn vm(&self, id: &VmId) -> Result<Option<VmRecord>, StoreError> {
        self.run(format_args!("reading VM {id}"), |c| vms::get(c, id))
    }

    async fn list_vms(&self, filter: &VmFilter) -> Result<Vec<VmRecord>, StoreError> {
        self.run("listing VMs", |c| vms::list(c, filter))
    }

    async fn transition(
        &self,
        id: &VmId,
        expected: VmState,
        change: &StateChange,
    ) -> Result<VmRecord, StoreError> {
        self.run(
            format_args!("moving VM {id} from {expected} to {}", change.to),
            |c| vms::transition(c, id, expected, change),
        )
    }

    async fn set_process(&self, id: &VmId, process: Option<ProcessRef>) -> Result<(), StoreError> {
        self.run(format_args!("recording the process of VM {id}"), |c| {
            vms::set_process(c, id, process)
        })
    }

    async fn set_held(&self, id: &VmId, held: bool, at: Timestamp) -> Result<VmRecord, StoreError> {
        self.run(format_args!("holding or releasing VM {id}"), |c| {
            vms::set_held(c, id, held, at)
        })
    }

    async fn cancel_restart(
        &self,
        id: &VmId,
        at: Timestamp,
        message: &str,
    ) -> Result<VmRecord, StoreError> {
        self.run(format_args!("cancelling VM {id}'s restart"), |c| {
            vms::cancel_restart(c, id, at, message)
        })
    }

    async fn add_event(&self, id: &VmId, at: Timestamp, message: &str) -> Result<(), StoreError> {
        self.run(format_args!("adding an event to VM {id}"), |c| {
            vms::add_event(c, id, at, message)
        })
    }

    async fn events(&self, id: &VmId) -> Result<Vec<VmEvent>, StoreError> {
        self.run(format_args!("reading the events of VM {id}"), |c| {
            vms::events(c, id)
        })
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.run(format_args!("inserting token {}", token.id), |c| {
            tokens::insert(c, token)
        })
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.run("looking up a token", |c| tokens::by_hash(c, hash))
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.run("listing tokens", |c| tokens::list(c))
    }

    async fn revoke_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.run(format_args!("revoking token {id}"), |c| {
            tokens::revoke(c, id)
        })
    }

    async fn insert_viewer_link(&self, link: &ViewerLinkRecord) -> Result<(), StoreError> {
        self.run(format_args!("inserting viewer link {}", link.id), |c| {
            viewer_links::insert(c, link)
        })
    }

    async fn viewer_link_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<ViewerLinkRecord>, StoreError> {
        self.run("looking up a viewer link", |c| {
            viewer_links::by_hash(c, hash)
        })
    }

    async fn viewer_links(&self, vm: &VmId) -> Result<Vec<ViewerLinkRecord>, StoreError> {
        self.run(format_args!("listing the viewer links of VM {vm}"), |c| {
            viewer_links::of_vm(c, vm)
        })
    }

    async fn revoke_viewer_link(
        &self,
        vm: &VmId,
        id: &str,
        at: Timestamp,
    ) -> Result<Option<ViewerLinkRecord>, StoreError> {
        self.run(format_args!("revoking viewer link {id}"), |c| {
            viewer_links::revoke(c, vm, id, at)
        })
    }

    async fn token_used(&self, id: &str, at: Timestamp) -> Result<(), StoreError> {
        self.run(format_args!("recording the use of token {id}"), |c| {
            tokens::used(c, id, at)
        })
    }

    async fn enqueue_job(&self, job: &NewJob) -> Result<(), StoreError> {
        self.run(
            format_args!("enqueueing a {} job for VM {}", job.kind.as_str(), job.vm),
            |c| jobs::enqueue(c, job),
        )
    }

    async fn lease_due_jobs(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        owner: &str,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.run(format_args!("leasing due jobs to {owner}"), |c| {
            jobs::lease_due(c, now, lease_until, owner, limit)
        })
    }

    async fn finish_job(&self, id: i64) -> Result<(), StoreError> {
        self.run(format_args!("finishing job {id}"), |c| jobs::finish(c, id))
    }

    async fn retry_job(&self, id: i64, error: &str, due: Timestamp) -> Result<(), StoreError> {
        self.run(format_args!("postponing job {id}"), |c| {
            jobs::retry(c, id, error, due)
        })
    }

    async fn jobs_for(&self, vm: &VmId) -> Result<Vec<Job>, StoreError> {
        self.run(format_args!("reading the jobs of VM {vm}"), |c| {
            jobs::pending_for(c, vm)
        })
    }

    async fn count_pending_jobs(&self) -> Result<u64, StoreError> {
        self.run("counting pending jobs", |c| jobs::count_pending(c))
    }

    async fn insert_archive(&self, archive: &ArchiveRecord) -> Result<(), StoreError> {
        self.run(
            format_args!("recording the archive of VM {}", archive.vm),
            |c| archives::insert(c, archive),
        )
    }

    async fn archive(&self, vm: &VmId) -> Result<Option<ArchiveRecord>, StoreError> {
        self.run(format_args!("reading the archive of VM {vm}"), |c| {
            archives::get(c, vm)
        })
    }

    async fn archives(&self) -> Result<Vec<ArchiveRecord>, StoreError> {
        self.run("listing archives", |c| archives::list(c))
    }

    async fn delete_archive(&self, vm: &VmId) -> Result<(), StoreError> {
        self.run(format_args!("deleting the archive of VM {vm}"), |c| {
            archives::delete(c, vm)
        })
    }

    async fn set_guest_config(&self, vm: &VmId, config: &GuestConfig) -> Result<(), StoreError> {
        let text = serde_json::to_string(config).map_err(|e| {
            StoreError::Corrupt(format!(
                "the configuration of VM {vm} cannot be encoded: {e}"
            ))
        })?;
        self.run(format_args!("storing the configuration of VM {vm}"), |c| {
            agent::set_config(c, vm, &text)
        })
    }

    async fn guest_config(&self, vm: &VmId) -> Result<GuestConfig, StoreError> {
        let text = self.run(format_args!("reading the configuration of VM {vm}"), |c| {
            agent::config(c, vm)
        })?;
        match text {
            None => Ok(GuestConfig::default()),
            Some(t) => serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(format!("VM {vm}: column config: {e}"))),
        }
    }

    async fn agent_hello(&self, vm: &VmId, hello: &AgentHello) -> Result<u64, StoreError> {
        self.run(format_args!("recording the agent hello of VM {vm}"), |c| {
            agent::hello(c, vm, hello)
        })
    }

    async fn agent_heartbeat(&self, vm: &VmId, at: Timestamp) -> Result<(), StoreError> {
        self.run(
            format_args!("recording an agent heartbeat of VM {vm}"),
            |c| agent::heartbeat(c, vm, at),
        )
    }

    async fn agent_disconnected(&self, vm: &VmId, at: Timestamp) -> Result<(), StoreError> {
        self.run(format_args!("recording the agent of VM {vm} gone"), |c| {
            agent::disconnected(c, vm, at)
        })
    }

    async fn store_agent_records(
        &self,
        vm: &VmId,
        instance: &str,
        records: &[NewAgentRecord],
    ) -> Result<u64, StoreError> {
        self.run(format_args!("storing agent records of VM {vm}"), |c| {
            agent::store_records(c, vm, instance, records)
        })
    }

    async fn agent_status(&self, vm: &VmId) -> Result<Option<AgentStatus>, StoreError> {
        self.run(format_args!("reading the agent status of VM {vm}"), |c| {
            agent::status(c, vm)
        })
    }

    async fn agent_records(&self, vm: &VmId) -> Result<Vec<AgentRecord>, StoreError> {
        self.run(format_args!("reading the agent records of VM {vm}"), |c| {
            agent::records(c, vm)
        })
    }

    async fn latest_agent_record(
        &self,
        vm: &VmId,
        kind: &str,
    ) -> Result<Option<AgentRecord>, StoreError> {
        self.run(format_args!("reading the latest {kind} of VM {vm}"), |c| {
            agent::latest_record(c, vm, kind)
        })
    }

    async fn service_lines(
        &self,
        vm: &VmId,
        service: &str,
        tail: usize,
    ) -> Result<Vec<ServiceLine>, StoreError> {
        self.run(format_args!("reading service output of VM {vm}"), |c| {
            agent::service_lines(c, vm, service, tail)
        })
    }
}

#[async_trait]
impl CredentialStore for SqliteStore {
    async fn insert_credential(&self, record: &CredentialRecord) -> Result<(), StoreError> {
        let m = &record.meta;
        self.run(
            format_args!("storing version {} of credential {}", m.version, m.owner),
            |c| credentials::insert(c, record),
        )
    }

    async fn current_credential(
        &self,
        owner: &CredentialOwner,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        self.run(format_args!("reading credential {owner}"), |c| {
            credentials::current(c, owner)
        })
    }

    async fn credential_version(
        &self,
        owner: &CredentialOwner,
        version: u64,
    ) -> Result<Option<CredentialRecord>, StoreError> {
        self.run(
            format_args!("reading version {version} of credential {owner}"),
            |c| credentials::version(c, owner, version),
        )
    }

    async fn list_credentials(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<Vec<CredentialMeta>, StoreError> {
        self.run(
            format_args!("listing the credentials of {tenant}/{user}"),
            |c| credentials::list(c, tenant, user),
        )
    }

    async fn credentials_not_under(
        &self,
        kek_version: u32,
    ) -> Result<Vec<CredentialRecord>, StoreError> {
        self.run(
            format_args!("reading the credentials not under key version {kek_version}"),
            |c| credentials::not_under(c, kek_version),
        )
    }

    async fn credential_counts_by_kek(&self) -> Result<BTreeMap<u32, u64>, StoreError> {
        self.run("counting credentials by key version", |c| {
            credentials::counts_by_kek(c)
        })
    }

    async fn delete_credentials(
        &self,
        owner: &CredentialOwner,
    ) -> Result<Option<CredentialMeta>, StoreError> {
        self.run(format_args!("deleting credential {owner}"), |c| {
            credentials::delete(c, owner)
        })
    }

    async fn rewrap_credentials(&self, rewraps: &[Rewrap]) -> Result<u64, StoreError> {
        self.run(
            format_args!("rewrapping {} credential data keys", rewraps.len()),
            |c| credentials::rewrap(c, rewraps),
        )
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.run(format_args!("inserting session {}", session.id), |c| {
            sessions::insert(c, session)
        })
    }

    async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        self.run(format_args!("reading session {id}"), |c| {
            sessions::get(c, id)
        })
    }

    async fn list_sessions(
        &self,
        filter: &SessionFilter,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.run("listing sessions", |c| sessions::list(c, filter))
    }

    async fn change_session(
        &self,
        id: &SessionId,
        expected: SessionState,
        change: &SessionChange,
    ) -> Result<SessionRecord, StoreError> {
        self.run(
            format_args!("moving session {id} from {expected} to {}", change.to),
            |c| sessions::change(c, id, expected, change),
        )
    }

    async fn add_session_event(
        &self,
        id: &SessionId,
        at: Timestamp,
        message: &str,
    ) -> Result<(), StoreError> {
        self.run(format_args!("adding an event to session {id}"), |c| {
            sessions::add_event(c, id, at, message)
        })
    }

    async fn session_events(&self, id: &SessionId) -> Result<Vec<SessionEvent>, StoreError> {
        self.run(format_args!("reading the events of session {id}"), |c| {
            sessions::events(c, id)
        })
    }

    async fn add_egress_connection(
        &self,
        id: &SessionId,
        connection: &EgressConnection,
    ) -> Result<(), StoreError> {
        self.run(
            format_args!("recording an egress connection of session {id}"),
            |c| sessions::add_egress(c, id, connection),
        )
    }

    async fn egress_connections(
        &self,
        id: &SessionId,
    ) -> Result<Vec<EgressConnection>, StoreError> {
        self.run(
            format_args!("reading the egress connections of session {id}"),
            |c| sessions::egress(c, id),
        )
    }
}

#[async_trait]
impl EgressSettingsStore for SqliteStore {
    async fn put_egress_settings(&self, record: &EgressSettingsRecord) -> Result<(), StoreError> {
        self.run(
            format_args!("storing the egress settings of {}", record.tenant),
            |c| egress_settings::put(c, record),
        )
    }

    async fn egress_settings(
        &self,
        tenant: &TenantId,
        user: Option<&UserName>,
    ) -> Result<Option<EgressSettingsRecord>, StoreError> {
        self.run(
            format_args!("reading the egress settings of {tenant}"),
            |c| egress_settings::get(c, tenant, user),
        )
    }

    async fn delete_egress_settings(
        &self,
        tenant: &TenantId,
        user: Option<&UserName>,
    ) -> Result<Option<EgressSettingsRecord>, StoreError> {
        self.run(
            format_args!("deleting the egress settings of {tenant}"),
            |c| egress_settings::delete(c, tenant, user),
        )
    }
}

#[async_trait]
impl crate::EgressRefusalStore for SqliteStore {
    async fn put_egress_refusals(
        &self,
        vm: &VmId,
        totals: crate::EgressRefusals,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.run(format_args!("storing the egress refusals of {vm}"), |c| {
            egress_refusals::put(c, vm, totals, at)
        })
    }

    async fn egress_refusals(
        &self,
        vm: &VmId,
    ) -> Result<Option<crate::EgressRefusals>, StoreError> {
        self.run(format_args!("reading the egress refusals of {vm}"), |c| {
            egress_refusals::get(c, vm)
        })
    }

    async fn delete_egress_refusals(&self, vm: &VmId) -> Result<(), StoreError> {
        self.run(format_args!("deleting the egress refusals of {vm}"), |c| {
            egress_refusals::delete(c, vm)
        })
    }
}

#[async_trait]
impl crate::TenantNetworkStore for SqliteStore {
    async fn put_tenant_network(
        &self,
        record: &hearth_types::api::TenantNetworkPolicy,
    ) -> Result<(), StoreError> {
        self.run(
            format_args!("storing the network policy of tenant {}", record.tenant),
            |c| tenant_network::put(c, record),
        )
    }

    async fn tenant_network(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<hearth_types::api::TenantNetworkPolicy>, StoreError> {
        self.run(
            format_args!("reading the network policy of tenant {tenant}"),
            |c| tenant_network::get(c, tenant),
        )
    }

    async fn delete_tenant_network(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<hearth_types::api::TenantNetworkPolicy>, StoreError> {
        self.run(
            format_args!("deleting the network policy of tenant {tenant}"),
            |c| tenant_network::delete(c, tenant),
        )
    }

    async fn set_vm_network_policy(
        &self,
        vm: &VmId,
        policy: &hearth_types::api::NetworkPolicy,
    ) -> Result<(), StoreError> {
        self.run(
            format_args!("narrowing the network policy of VM {vm}"),
            |c| vms::set_network_policy(c, vm, policy),
        )
    }
}

#[async_trait]
impl CliVmStore for SqliteStore {
    async fn insert_cli_vm(&self, record: &CliVmRecord) -> Result<(), StoreError> {
        self.run(format_args!("storing the CLI VM of {}", record.user), |c| {
            cli_vms::insert(c, record)
        })
    }

    async fn cli_vm(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<Option<CliVmRecord>, StoreError> {
        self.run(format_args!("reading the CLI VM of {user}"), |c| {
            cli_vms::get(c, tenant, user)
        })
    }

    async fn list_cli_vms(&self) -> Result<Vec<CliVmRecord>, StoreError> {
        self.run("listing CLI VMs", |c| cli_vms::list(c))
    }

    async fn set_cli_base(
        &self,
        tenant: &TenantId,
        user: &UserName,
        vm: &VmId,
        provider: &ProviderId,
        version: u64,
    ) -> Result<(), StoreError> {
        self.run(format_args!("recording the {provider} base of {vm}"), |c| {
            cli_vms::set_base(c, (tenant, user, vm), provider, version)
        })
    }

    async fn delete_cli_vm(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<Option<CliVmRecord>, StoreError> {
        self.run(format_args!("deleting the CLI VM of {user}"), |c| {
            cli_vms::delete(c, tenant, user)
        })
    }
}
