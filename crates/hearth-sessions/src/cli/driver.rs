//! One CLI VM, followed while it runs: once its agent is connected, the
//! user's current credentials are written in (every provider with one),
//! the egress proxy listens on the guest's loopback, and each provider's
//! files are watched. A watched set that differs from the vault's current
//! version is a refresh (or a login made in the VM): it is sealed over the
//! version the VM had, and a stale one loses, is reported in the VM's
//! events, and the VM gets the current version. Logins that seal a newer
//! version arrive on `pushes` and are written in at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hearth_control::agent_link::{CaptureEvent, LinkHandle};
use hearth_store::{CliVmRecord, CredentialOwner};
use hearth_types::{ProviderId, Timestamp, VmState};
use hearth_vault::VaultError;
use tokio::sync::mpsc;

use super::{ended, inject};
use crate::driver::credential_files;
use crate::providers::Provider;
use crate::{admin, Sessions};

const POLL: Duration = Duration::from_millis(500);
/// How often a stopped CLI VM is looked at for its next boot.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// Follows the CLI VM through every boot: it is persistent, so a stop, a
/// failure or a restart by its policy ends one boot, and the next (a
/// start, a restart) is followed again, with the credentials' current
/// versions written in afresh. Ends when the VM is gone.
pub(crate) async fn drive(
    sessions: Sessions,
    record: CliVmRecord,
    mut pushes: mpsc::UnboundedReceiver<ProviderId>,
) {
    loop {
        if let Some(link) = wait_for_agent(&sessions, &record).await {
            one_boot(&sessions, &record, link, &mut pushes).await;
        }
        if !wait_for_next_boot(&sessions, &record).await {
            return;
        }
    }
}

/// Waits while the VM is stopped or failed; `false` once it is gone.
async fn wait_for_next_boot(sessions: &Sessions, record: &CliVmRecord) -> bool {
    loop {
        match sessions.inner.controller.vm(&admin(), &record.vm).await {
            Ok(vm) if vm.state == VmState::Destroyed => return false,
            Ok(vm) if !ended(vm.state) => return true,
            Ok(_) => tokio::time::sleep(IDLE_POLL).await,
            Err(_) => return false,
        }
    }
}

/// One boot of the VM: credentials in, egress served, files watched,
/// until the VM stops running.
async fn one_boot(
    sessions: &Sessions,
    record: &CliVmRecord,
    link: LinkHandle,
    pushes: &mut mpsc::UnboundedReceiver<ProviderId>,
) {
    let sessions = sessions.clone();
    let record = record.clone();
    let mut vm = CliVm {
        sessions: sessions.clone(),
        record,
        link,
        bases: BTreeMap::new(),
    };
    let _proxy = vm.serve_egress().await;
    let started = Instant::now();
    let injected = vm.inject_all().await;
    vm.event(format!(
        "credentials in place: {injected} ({} ms after the agent connected)",
        started.elapsed().as_millis()
    ))
    .await;
    let (seen, mut captures) = mpsc::unbounded_channel();
    for provider in watched(&sessions, &vm.bases) {
        vm.watch(&provider, seen.clone());
    }
    let mut poll = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            Some((provider, event)) = captures.recv() => vm.captured(&provider, event).await,
            Some(provider) = pushes.recv() => vm.push(&provider).await,
            _ = poll.tick() => if vm.gone().await { return },
        }
    }
}

/// The providers whose files are watched: those written in, and those
/// with no file of theirs among the written ones' (two entries naming
/// one file, `codex` and an operator's `fake-codex` say, would otherwise
/// both seal it).
fn watched(sessions: &Sessions, written: &BTreeMap<ProviderId, u64>) -> Vec<Provider> {
    let catalogue = &sessions.inner.catalogue;
    let taken: Vec<String> = written
        .keys()
        .filter_map(|p| catalogue.get(p))
        .flat_map(|p| p.capture_spec().files.into_iter().map(|f| f.path))
        .collect();
    catalogue
        .list()
        .filter(|p| {
            written.contains_key(&p.name)
                || !p
                    .capture_spec()
                    .files
                    .iter()
                    .any(|f| taken.contains(&f.path))
        })
        .cloned()
        .collect()
}

/// The VM's link once its agent is connected; `None` if it ended first.
async fn wait_for_agent(sessions: &Sessions, record: &CliVmRecord) -> Option<LinkHandle> {
    let controller = &sessions.inner.controller;
    loop {
        if let Some(link) = controller.agent_link(&record.vm) {
            if link.wait_connected(POLL).await {
                return Some(link);
            }
        }
        match controller.vm(&admin(), &record.vm).await {
            Ok(vm) if !ended(vm.state) => tokio::time::sleep(POLL).await,
            _ => return None,
        }
    }
}

struct CliVm {
    sessions: Sessions,
    record: CliVmRecord,
    link: LinkHandle,
    /// Per provider, the version the VM's files are at (this boot).
    bases: BTreeMap<ProviderId, u64>,
}

impl CliVm {
    fn owner(&self, provider: &ProviderId) -> CredentialOwner {
        CredentialOwner {
            tenant: self.record.tenant.clone(),
            user: self.record.user.clone(),
            provider: provider.clone(),
        }
    }

    /// Writes every provider's current version; says which.
    async fn inject_all(&mut self) -> String {
        let providers: Vec<Provider> = self.sessions.inner.catalogue.list().cloned().collect();
        let mut done = Vec::new();
        for provider in &providers {
            if let Some(version) = self.write_current(provider).await {
                done.push(format!("{} version {version}", provider.name));
            }
        }
        match done.is_empty() {
            true => "none (the user has no credentials)".to_owned(),
            false => done.join(", "),
        }
    }

    /// Writes the provider's current version into the VM and records it
    /// as the VM's base; the version, or `None` when there is none (or it
    /// could not be written: the VM's events say why).
    async fn write_current(&mut self, provider: &Provider) -> Option<u64> {
        let owner = self.owner(&provider.name);
        let opened = match self.sessions.inner.vault.open_current(&owner).await {
            Ok(opened) => opened?,
            Err(e) => {
                let why = hearth_types::error_chain(&e);
                self.event(format!("{} credential not opened: {why}", provider.name))
                    .await;
                return None;
            }
        };
        if let Err(why) = inject::write(&self.link, provider, &opened.files).await {
            self.event(format!("{} credential not written: {why}", provider.name))
                .await;
            return None;
        }
        self.set_base(&provider.name, opened.meta.version).await;
        Some(opened.meta.version)
    }

    async fn set_base(&mut self, provider: &ProviderId, version: u64) {
        self.bases.insert(provider.clone(), version);
        let r = &self.record;
        let stored = self
            .sessions
            .inner
            .store
            .set_cli_base(&r.tenant, &r.user, &r.vm, provider, version);
        if let Err(e) = stored.await {
            tracing::warn!(vm = %r.vm, error = %e, "a CLI VM's credential version was not recorded");
        }
    }

    /// Has the agent watch the provider's files; what it sees comes to
    /// `seen`, tagged with the provider.
    fn watch(&self, provider: &Provider, seen: mpsc::UnboundedSender<(ProviderId, CaptureEvent)>) {
        let Ok(mut events) = self.link.watch_capture(provider.capture_spec()) else {
            return;
        };
        let name = provider.name.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if seen.send((name.clone(), event)).is_err() {
                    return;
                }
            }
        });
    }

    /// A complete set seen in the VM: nothing if it is the current
    /// version, else a refresh sealed over the VM's base.
    async fn captured(&mut self, provider: &ProviderId, event: CaptureEvent) {
        let set = match event {
            CaptureEvent::Captured(set) => set,
            CaptureEvent::Failed(why) => {
                return self
                    .event(format!("{provider} files not watched: {why}"))
                    .await;
            }
        };
        let Some(entry) = self.sessions.inner.catalogue.get(provider).cloned() else {
            return;
        };
        let seen_at = Instant::now();
        let files = credential_files(&entry, set);
        let owner = self.owner(provider);
        let vault = self.sessions.inner.vault.clone();
        if let Ok(Some(current)) = vault.open_current(&owner).await {
            if current.files == files {
                if self.bases.get(provider) != Some(&current.meta.version) {
                    self.set_base(provider, current.meta.version).await;
                }
                return;
            }
        }
        let base = self.bases.get(provider).copied().unwrap_or(0);
        match vault.seal_over(&owner, base, &files).await {
            Ok(meta) => {
                self.set_base(provider, meta.version).await;
                self.event(format!(
                    "{provider} credential refreshed in the VM, sealed as version {} over version {base} ({} ms)",
                    meta.version,
                    seen_at.elapsed().as_millis()
                ))
                .await;
            }
            Err(VaultError::Stale { current, .. }) => {
                self.event(format!(
                    "{provider} refresh made from version {base} lost to version {current}, sealed meanwhile: the VM gets version {current}"
                ))
                .await;
                self.write_current(&entry).await;
            }
            Err(e) => {
                let why = hearth_types::error_chain(&e);
                self.event(format!("{provider} refresh not sealed: {why}"))
                    .await;
            }
        }
    }

    /// A login sealed a newer version: the VM gets it.
    async fn push(&mut self, provider: &ProviderId) {
        let Some(entry) = self.sessions.inner.catalogue.get(provider).cloned() else {
            return;
        };
        if let Some(version) = self.write_current(&entry).await {
            self.event(format!(
                "{provider} credential version {version} from a new login written in"
            ))
            .await;
        }
    }

    async fn serve_egress(&self) -> Option<tokio::task::JoinHandle<()>> {
        let policy = match self.sessions.cli_policy(&self.record).await {
            Ok(policy) => policy,
            Err(why) => {
                self.event(format!("no egress: {why}")).await;
                return None;
            }
        };
        let incoming = self.link.listen(crate::guest::PROXY_PORT).ok()?;
        let proxy = self
            .sessions
            .inner
            .config
            .egress
            .vm_proxy(self.record.vm.clone());
        Some(tokio::spawn(crate::driver::serve_proxy(
            incoming, proxy, policy,
        )))
    }

    async fn gone(&self) -> bool {
        let vm = self
            .sessions
            .inner
            .controller
            .vm(&admin(), &self.record.vm)
            .await;
        !vm.is_ok_and(|v| v.state == VmState::Ready || !ended(v.state))
    }

    async fn event(&self, message: String) {
        let store = &self.sessions.inner.store;
        if let Err(e) = store
            .add_event(&self.record.vm, Timestamp::now(), &message)
            .await
        {
            tracing::debug!(vm = %self.record.vm, error = %e, "a CLI VM event was not stored");
        }
    }
}
