//! Each user's CLI VM: one per tenant and user, where their AI command-line
//! tools run logged in. At each boot its driver ([`driver`]) writes the
//! user's current credentials from the vault into the user's home
//! ([`inject`]), carries the egress proxy on the guest's loopback like a
//! session's, and watches the files: a tool's refresh is sealed as a new
//! version over the one the VM had (a stale base loses), and a login that
//! seals a newer version is pushed to the running VM at once. The
//! plaintext goes from the vault to the agent's channel and back, never to
//! a file, row, event or log of the host. See `docs/cli-vms.md`.

mod driver;
mod inject;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use hearth_store::{CliVmRecord, CredentialOwner, StoreError};
use hearth_types::api::CreateVm;
use hearth_types::guest::GuestConfig;
use hearth_types::{ProviderId, RestartPolicy, TenantId, Timestamp, UserName, VmId, VmState};
use tokio::sync::mpsc;

use crate::{admin, guest, tenant_scope, SessionError, Sessions};

/// The image a CLI VM boots unless the start names another.
pub const DEFAULT_IMAGE: &str = "cli";

/// A CLI VM as the API shows it: no credential content, versions only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliVmInfo {
    pub tenant: TenantId,
    pub user: UserName,
    pub vm: VmId,
    pub image: String,
    pub state: VmState,
    pub created_at: Timestamp,
    /// Per provider, the credential version the VM's files are at.
    pub credentials: BTreeMap<ProviderId, u64>,
}

/// The running drivers, by tenant and user, each with its push queue.
#[derive(Debug, Default)]
pub(crate) struct Drivers {
    by_user: Mutex<HashMap<(TenantId, UserName), Running>>,
}

#[derive(Debug)]
struct Running {
    push: mpsc::UnboundedSender<ProviderId>,
    task: tokio::task::JoinHandle<()>,
}

impl Drivers {
    /// A login sealed a new version of `owner`'s credential: the user's
    /// running CLI VM gets it now.
    pub(crate) fn push(&self, owner: &CredentialOwner) {
        let key = (owner.tenant.clone(), owner.user.clone());
        if let Some(running) = self.lock().get(&key) {
            let _ = running.push.send(owner.provider.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, UserName), Running>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The VM a CLI VM is: made in ONE place, so what every CLI VM is (its
/// image, the proxy settings, `persistent` once VMs can be) changes here.
pub fn cli_vm_request(image: &str, readiness_timeout_secs: u64) -> CreateVm {
    CreateVm {
        image: image.to_owned(),
        readiness_timeout_secs: Some(readiness_timeout_secs),
        config: GuestConfig {
            hostname: Some("cli".to_owned()),
            env: guest::proxy_env(),
            ..GuestConfig::default()
        },
        // Files the user makes survive stop and start; a crash restarts it.
        persistent: true,
        restart: Some(RestartPolicy::OnFailure),
        ..CreateVm::default()
    }
}

impl Sessions {
    /// Starts `user`'s CLI VM in `tenant` (from `image`, default `cli`),
    /// or answers the one running (`false`: it was there already).
    pub async fn start_cli(
        &self,
        tenant: &TenantId,
        user: &UserName,
        image: Option<&str>,
    ) -> Result<(CliVmInfo, bool), SessionError> {
        let inner = &self.inner;
        if let Some(existing) = self.kept_cli(tenant, user).await? {
            // Kept across stops: a stopped or failed one boots again from
            // its disk (its driver follows the new boot).
            let vm = inner.controller.vm(&admin(), &existing.vm).await;
            if vm.is_ok_and(|vm| ended(vm.state)) {
                let started = inner.controller.start_vm(&admin(), &existing.vm).await;
                started.map_err(SessionError::Vm)?;
            }
            return Ok((self.cli_info(existing).await?, false));
        }
        let image = image.unwrap_or(DEFAULT_IMAGE);
        let request = cli_vm_request(image, inner.config.readiness_timeout.as_secs());
        let vm = inner
            .controller
            .create_vm(&tenant_scope(tenant), request)
            .await
            .map_err(SessionError::Vm)?;
        let record = CliVmRecord {
            tenant: tenant.clone(),
            user: user.clone(),
            vm: vm.id.clone(),
            image: image.to_owned(),
            created_at: Timestamp::now(),
            bases: BTreeMap::new(),
        };
        if let Err(e) = inner.store.insert_cli_vm(&record).await {
            // Another start won the race: this VM goes, theirs stays.
            let _ = inner.controller.destroy(&admin(), &vm.id).await;
            return match e {
                StoreError::Duplicate { .. } => self.start_existing(tenant, user).await,
                e => Err(e.into()),
            };
        }
        self.spawn_cli_driver(record.clone());
        Ok((self.cli_info(record).await?, true))
    }

    async fn start_existing(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<(CliVmInfo, bool), SessionError> {
        let record = self.cli_record(tenant, user).await?;
        Ok((self.cli_info(record).await?, false))
    }

    /// The user's CLI VM; `CliNotFound` for another tenant's user too.
    pub async fn cli(&self, tenant: &TenantId, user: &UserName) -> Result<CliVmInfo, SessionError> {
        let record = self.cli_record(tenant, user).await?;
        self.cli_info(record).await
    }

    /// Stops the user's CLI VM; its disk is kept, and the next start
    /// boots it again with the credentials' current versions.
    pub async fn stop_cli(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<CliVmInfo, SessionError> {
        let record = self.cli_record(tenant, user).await?;
        let stopped = self.inner.controller.stop_vm(&admin(), &record.vm).await;
        stopped.map_err(SessionError::Vm)?;
        self.cli_info(record).await
    }

    /// Destroys the user's CLI VM and forgets it.
    pub async fn remove_cli(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<CliVmInfo, SessionError> {
        let inner = &self.inner;
        let record = self.cli_record(tenant, user).await?;
        let mut info = self.cli_info(record.clone()).await?;
        if let Some(running) = inner.cli.lock().remove(&(tenant.clone(), user.clone())) {
            running.task.abort();
        }
        inner.store.delete_cli_vm(tenant, user).await?;
        match inner.controller.destroy(&admin(), &record.vm).await {
            Ok(vm) => info.state = vm.state,
            Err(e) => tracing::debug!(vm = %record.vm, error = %e, "the CLI VM was going already"),
        }
        Ok(info)
    }

    /// Drivers for the CLI VMs stored (after a restart).
    pub(crate) async fn resume_cli(&self) {
        let records = match self.inner.store.list_cli_vms().await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %hearth_types::error_chain(&e), "CLI VMs not resumed");
                return;
            }
        };
        for record in records {
            self.spawn_cli_driver(record);
        }
    }

    /// The user's CLI VM unless it is gone (running, starting, stopped or
    /// failed: it keeps its disk); a record of one that is gone is
    /// forgotten.
    async fn kept_cli(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<Option<CliVmRecord>, SessionError> {
        let Some(record) = self.inner.store.cli_vm(tenant, user).await? else {
            return Ok(None);
        };
        let state = self.inner.controller.vm(&admin(), &record.vm).await;
        if state.is_ok_and(|vm| vm.state != VmState::Destroyed) {
            return Ok(Some(record));
        }
        let _ = self.remove_cli(tenant, user).await;
        Ok(None)
    }

    async fn cli_record(
        &self,
        tenant: &TenantId,
        user: &UserName,
    ) -> Result<CliVmRecord, SessionError> {
        self.inner
            .store
            .cli_vm(tenant, user)
            .await?
            .ok_or_else(|| SessionError::CliNotFound(user.clone()))
    }

    async fn cli_info(&self, record: CliVmRecord) -> Result<CliVmInfo, SessionError> {
        let state = match self.inner.controller.vm(&admin(), &record.vm).await {
            Ok(vm) => vm.state,
            Err(_) => VmState::Destroyed,
        };
        Ok(CliVmInfo {
            tenant: record.tenant,
            user: record.user,
            vm: record.vm,
            image: record.image,
            state,
            created_at: record.created_at,
            credentials: record.bases,
        })
    }

    fn spawn_cli_driver(&self, record: CliVmRecord) {
        let (push, pushes) = mpsc::unbounded_channel();
        let key = (record.tenant.clone(), record.user.clone());
        let task = tokio::spawn(driver::drive(self.clone(), record, pushes));
        let old = self.inner.cli.lock().insert(key, Running { push, task });
        if let Some(old) = old {
            old.task.abort();
        }
    }

    /// The policy of a CLI VM's egress: every provider's domains (their
    /// APIs among them), the server's and the tenant's; the user's or the
    /// tenant's upstream proxy, else the server's.
    pub(crate) async fn cli_policy(
        &self,
        record: &CliVmRecord,
    ) -> Result<hearth_egress::Policy, String> {
        let inner = &self.inner;
        let (tenant_domains, upstream) = inner.session_egress(&record.tenant, &record.user).await?;
        let domains: Vec<String> = inner
            .catalogue
            .list()
            .flat_map(|p| p.domains.iter().cloned())
            .collect();
        inner
            .config
            .egress
            .policy_for(&domains, &tenant_domains, upstream)
            .map_err(|e| format!("its egress policy is not valid: {e}"))
    }

    /// Forgets drivers whose task ended.
    pub(crate) fn reap_cli(&self) {
        self.inner.cli.lock().retain(|_, r| !r.task.is_finished());
    }
}

fn ended(state: VmState) -> bool {
    matches!(
        state,
        VmState::Failed | VmState::Stopped | VmState::Stopping | VmState::Destroyed
    )
}
