//! One session, run to its end: wait for the browser VM's agent, offer the
//! egress proxy on the guest's loopback, watch the provider's credential
//! files, follow the VM (ready: the login page is up; failed: the session
//! fails with the VM's diagnosis; the login command failed: its words),
//! and when the capture comes, seal it, destroy the VM through the one
//! deletion path (logs archived first) and complete.
//!
//! The driver is one task per live session. A cancel or an expiry moves
//! the session first (compare-and-set) and then aborts the task, so a
//! driver that wakes up to a session no longer live just stops.

use std::sync::Arc;
use std::time::Duration;

use hearth_control::agent_link::{splice, CaptureEvent, CapturedSet, LinkHandle, PortStream};
use hearth_egress::{Egress, Policy};
use hearth_store::{CredentialOwner, SessionChange, SessionRecord};
use hearth_types::{SessionId, SessionState, Timestamp, VmId, VmState};
use hearth_vault::{CredentialFile, CredentialFiles, Secret};
use tokio::sync::mpsc;

use crate::guest::{LOGIN_SERVICE, PROXY_PORT};
use crate::providers::Provider;
use crate::{admin, Inner};

/// How often the driver looks at the VM and the session.
const POLL: Duration = Duration::from_millis(500);
/// How long a destroyed VM may take to be gone before the driver stops
/// waiting (the cleanup job carries on and retries by itself).
const DESTROY_WAIT: Duration = Duration::from_secs(120);

pub(crate) async fn drive(inner: Arc<Inner>, record: SessionRecord, provider: Provider) {
    let id = record.id.clone();
    let Some(vm) = record.vm.clone() else {
        let why = "the session has no VM (the server stopped while creating it)".to_owned();
        inner.fail(&id, record.state, why, None).await;
        return;
    };
    let policy = match session_policy(&inner, &record, &provider).await {
        Ok(policy) => policy,
        Err(why) => {
            inner.fail(&id, record.state, why, None).await;
            return;
        }
    };
    if record.state == SessionState::Captured {
        finish(&inner, &id, &vm).await;
        return;
    }
    let Some(link) = wait_for_link(&inner, &id, &vm).await else {
        return;
    };
    let proxy = inner.config.egress.proxy(inner.store.clone(), id.clone());
    let listener = match link.listen(PROXY_PORT) {
        Ok(incoming) => tokio::spawn(serve_proxy(incoming, proxy, policy)),
        Err(e) => {
            let why = format!("the VM's agent cannot carry the egress proxy: {e}");
            inner.fail(&id, record.state, why, None).await;
            return;
        }
    };
    let outcome = watch(&inner, &id, &vm, &link, &provider).await;
    listener.abort();
    if let Some(captured) = outcome {
        seal(&inner, &id, &vm, &provider, captured).await;
    }
}

/// The provider's, the server's and the tenant's domains; the user's or
/// the tenant's upstream proxy, else the server's.
async fn session_policy(
    inner: &Inner,
    record: &SessionRecord,
    provider: &Provider,
) -> Result<Policy, String> {
    let (domains, upstream) = inner.session_egress(&record.tenant, &record.user).await?;
    inner
        .config
        .egress
        .policy(provider, &domains, upstream)
        .map_err(|e| format!("its egress policy is not valid: {e}"))
}

/// The link appears once the hypervisor runs; a VM that fails first is
/// reported by [`follow_vm`].
async fn wait_for_link(inner: &Inner, id: &SessionId, vm: &VmId) -> Option<LinkHandle> {
    loop {
        if let Some(link) = inner.controller.agent_link(vm) {
            return Some(link);
        }
        let session = inner.store.session(id).await.ok().flatten()?;
        if !session.state.is_live() {
            return None;
        }
        if let Some(why) = follow_vm(inner, &session, vm).await {
            inner.fail(id, session.state, why.0, why.1).await;
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Each guest connection to the proxy port, served by the egress proxy
/// under the session's policy.
pub(crate) async fn serve_proxy(
    mut incoming: mpsc::UnboundedReceiver<PortStream>,
    proxy: Egress,
    policy: Policy,
) {
    let policy = Arc::new(policy);
    while let Some(stream) = incoming.recv().await {
        let (proxy, policy) = (proxy.clone(), policy.clone());
        tokio::spawn(async move {
            let (near, far) = tokio::io::duplex(256 * 1024);
            let carried = tokio::spawn(splice(stream, near));
            proxy.serve(far, &policy).await;
            let _ = carried.await;
        });
    }
}

/// Follows the session until a capture arrives (returned) or it ends.
async fn watch(
    inner: &Inner,
    id: &SessionId,
    vm: &VmId,
    link: &LinkHandle,
    provider: &Provider,
) -> Option<CapturedSet> {
    let mut captures = match link.watch_capture(provider.capture_spec()) {
        Ok(captures) => captures,
        Err(e) => {
            let why = format!("the VM's agent cannot watch for the credential: {e}");
            inner.fail(id, SessionState::Starting, why, None).await;
            return None;
        }
    };
    let mut poll = tokio::time::interval(POLL);
    let mut link_open = true;
    loop {
        tokio::select! {
            event = captures.recv(), if link_open => match event {
                Some(CaptureEvent::Captured(set)) => return Some(set),
                Some(CaptureEvent::Failed(why)) => {
                    let session = inner.store.session(id).await.ok().flatten()?;
                    let why = format!("the agent could not capture the credential: {why}");
                    inner.fail(id, session.state, why, None).await;
                    return None;
                }
                // The link ended: the VM is going; the poll says why.
                None => link_open = false,
            },
            _ = poll.tick() => {
                let session = inner.store.session(id).await.ok().flatten()?;
                if !session.state.is_live() {
                    return None;
                }
                if let Some((why, diagnosis)) = follow_vm(inner, &session, vm).await {
                    inner.fail(id, session.state, why, diagnosis).await;
                    return None;
                }
            }
        }
    }
}

/// Moves a starting session on once the VM is ready; says why the session
/// must fail when the VM or the login command did.
async fn follow_vm(
    inner: &Inner,
    session: &SessionRecord,
    vm: &VmId,
) -> Option<(String, Option<hearth_types::api::Diagnosis>)> {
    let state = match inner.controller.vm(&admin(), vm).await {
        Ok(v) => v.state,
        Err(e) => return Some((format!("its VM {vm} is gone: {e}"), None)),
    };
    match state {
        VmState::Ready if session.state == SessionState::Starting => {
            let change = SessionChange::to(
                SessionState::WaitingForUser,
                Timestamp::now(),
                "the login page is up: open the viewer link and log in",
            );
            let _ = inner
                .store
                .change_session(&session.id, SessionState::Starting, &change)
                .await;
            None
        }
        VmState::Ready => login_failure(inner, vm).await.map(|why| (why, None)),
        VmState::Failed | VmState::Stopped | VmState::Stopping | VmState::Destroyed => {
            let diagnosis = inner.controller.diagnosis(&admin(), vm).await.ok();
            let summary = diagnosis
                .as_ref()
                .and_then(|d| d.findings.first())
                .map(|f| format!(": {}", f.cause))
                .unwrap_or_default();
            Some((
                format!("its browser VM {vm} is {state}{summary}"),
                diagnosis,
            ))
        }
        _ => None,
    }
}

/// The login command ended without a capture: a failure in its words.
async fn login_failure(inner: &Inner, vm: &VmId) -> Option<String> {
    let health = inner.controller.health(&admin(), vm).await.ok()?;
    let login = health.services.iter().find(|s| s.name == LOGIN_SERVICE)?;
    if let Some(why) = &login.spawn_error {
        return Some(format!("the login command could not be started: {why}"));
    }
    let exit = login.last_exit?;
    if exit.status.code == Some(0) {
        return None; // it may still write its files; the capture decides.
    }
    let output = inner.login_output(vm).await;
    let last = output.last().map(|l| format!(": {l}")).unwrap_or_default();
    Some(format!("the login command {}{last}", exit.status))
}

/// Seals the capture, then ends the VM and completes the session.
async fn seal(inner: &Inner, id: &SessionId, vm: &VmId, provider: &Provider, set: CapturedSet) {
    let Ok(Some(session)) = inner.store.session(id).await else {
        return;
    };
    let owner = CredentialOwner {
        tenant: session.tenant.clone(),
        user: session.user.clone(),
        provider: session.provider.clone(),
    };
    let started = std::time::Instant::now();
    let sealed = inner
        .vault
        .seal(&owner, &credential_files(provider, set))
        .await;
    let meta = match sealed {
        Ok(meta) => meta,
        Err(e) => {
            let why = format!(
                "the credential could not be sealed: {}",
                hearth_types::error_chain(&e)
            );
            inner.fail(id, session.state, why, None).await;
            return;
        }
    };
    let mut change = SessionChange::to(
        SessionState::Captured,
        Timestamp::now(),
        format!(
            "credential captured and sealed as version {} ({} files, {} ms to seal)",
            meta.version,
            meta.files.len(),
            started.elapsed().as_millis()
        ),
    );
    change.credential_version = Some(meta.version);
    inner.cli.push(&owner);
    if let Err(e) = inner.store.change_session(id, session.state, &change).await {
        tracing::warn!(session = %id, error = %e, "a sealed capture's session moved first");
        return;
    }
    finish(inner, id, vm).await;
}

/// The files as the vault keeps them: paths relative to the user's home.
pub(crate) fn credential_files(provider: &Provider, set: CapturedSet) -> CredentialFiles {
    let home = format!("{}/", provider.home());
    let files = set
        .files
        .into_iter()
        .map(|f| CredentialFile {
            path: f.path.strip_prefix(&home).unwrap_or(&f.path).to_owned(),
            mode: f.mode,
            contents: Secret::new(f.contents.to_vec()),
        })
        .collect();
    CredentialFiles { files }
}

/// Destroys the captured session's VM and completes it once it is gone.
async fn finish(inner: &Inner, id: &SessionId, vm: &VmId) {
    request_destroy(&inner.controller, vm).await;
    let event = if wait_destroyed(&inner.controller, vm).await {
        destroyed_event(vm)
    } else {
        format!("VM {vm} is being destroyed (its cleanup goes on)")
    };
    let change = SessionChange::to(SessionState::Completed, Timestamp::now(), event);
    if let Err(e) = inner
        .store
        .change_session(id, SessionState::Captured, &change)
        .await
    {
        tracing::debug!(session = %id, error = %e, "completion lost a race");
    }
}

/// For a session that ended otherwise (expired, cancelled): the VM goes,
/// and an event says when it is gone.
pub(crate) async fn destroy_vm(inner: &Inner, id: &SessionId, vm: &VmId) {
    request_destroy(&inner.controller, vm).await;
    let (store, controller) = (inner.store.clone(), inner.controller.clone());
    let (id, vm) = (id.clone(), vm.clone());
    tokio::spawn(async move {
        if wait_destroyed(&controller, &vm).await {
            let message = destroyed_event(&vm);
            let _ = store
                .add_session_event(&id, Timestamp::now(), &message)
                .await;
        }
    });
}

/// The one deletion path (logs archived first); a VM already going or
/// gone is not an error here.
async fn request_destroy(controller: &Arc<hearth_control::controller::Controller>, vm: &VmId) {
    if let Err(e) = controller.destroy(&admin(), vm).await {
        tracing::debug!(%vm, error = %e, "the session's VM was not destroyed now");
    }
}

fn destroyed_event(vm: &VmId) -> String {
    format!("VM {vm} destroyed, its logs archived")
}

async fn wait_destroyed(controller: &hearth_control::controller::Controller, vm: &VmId) -> bool {
    let deadline = tokio::time::Instant::now() + DESTROY_WAIT;
    while tokio::time::Instant::now() < deadline {
        match controller.vm(&admin(), vm).await {
            Ok(v) if v.state == VmState::Destroyed => return true,
            Err(_) => return true,
            _ => tokio::time::sleep(POLL).await,
        }
    }
    false
}
