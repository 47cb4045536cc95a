//! A NIC for `hearth vm run --network nat`: the same network a `hearth
//! serve` VM gets (namespace, TAP, NAT, policy, resolver and proxy), made
//! and removed by the run itself. A foreground run has no store of VMs,
//! so its slots live in a store of their own (`runs/network/slots.db`),
//! under a prefix and a transit pool of their own (`hrun-sN`,
//! 10.232.0.0/16), apart from any server's on the same host. Each run
//! holds a lock on `runs/network/ID.lock` while its VM lives: a slot whose
//! lock nobody holds belongs to a run that ended or died, and the next
//! networked run removes it before it makes its own.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth_guestkit::{BuildLock, DataDir};
use hearth_net::{NicPolicy, Prefix, TransitPool};
use hearth_store::SqliteStore;
use hearth_types::guest::GuestNetwork;
use hearth_types::{error_chain, VmId};

use crate::controller::network::{guest_network, vmm_nic, NetworkConfig, Networks};

/// The names of foreground runs' namespaces and links: `hrun-s3`.
pub const RUN_PREFIX: &str = "hrun";
/// Foreground runs' transit /30s, apart from a server's (10.231.0.0/16
/// by default).
pub const RUN_POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 232, 0, 0), 16);

/// A foreground VM's network, held until [`RunNetwork::remove`].
#[derive(Debug)]
pub struct RunNetwork {
    networks: Networks,
    vm: VmId,
    lock: Option<(BuildLock, PathBuf)>,
    /// The TAP, until the hypervisor takes it.
    pub nic: Option<hearth_vmm::Nic>,
    /// What the guest's agent applies (`hearth.net=` on its command line).
    pub guest: GuestNetwork,
}

impl RunNetwork {
    /// Makes VM `vm`'s network, after removing what runs that ended left.
    pub async fn make(data: &DataDir, vm: &VmId, policy: &NicPolicy) -> Result<RunNetwork, String> {
        let dir = data.runs().join("network");
        let lock_path = dir.join(format!("{vm}.lock"));
        let lock = BuildLock::acquire(&lock_path).map_err(|e| error_chain(&e))?;
        let networks = open(&dir)?;
        let lock_dir = dir.clone();
        networks
            .reconcile(|owner| run_is_live(&lock_dir, owner))
            .await;
        let nic = networks.attach(vm, policy).await?;
        let guest = guest_network(&nic.guest);
        Ok(RunNetwork {
            networks,
            vm: vm.clone(),
            lock: Some((lock, lock_path)),
            nic: Some(vmm_nic(nic)),
            guest,
        })
    }

    /// Removes the network and releases its slot, then the run's lock.
    pub async fn remove(mut self) {
        self.nic = None;
        if let Err(e) = self.networks.detach(&self.vm).await {
            tracing::warn!(vm = %self.vm, error = %error_chain(&e), "removing the run's network; the next networked run removes it");
            return;
        }
        if let Some((lock, path)) = self.lock.take() {
            let _ = std::fs::remove_file(&path);
            drop(lock);
        }
    }
}

fn open(dir: &Path) -> Result<Networks, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
    let store = SqliteStore::open(&dir.join("slots.db")).map_err(|e| error_chain(&e))?;
    let prefix: Prefix = RUN_PREFIX.parse().map_err(|e| error_chain(&e))?;
    let pool = TransitPool::new(RUN_POOL.0, RUN_POOL.1).map_err(|e| error_chain(&e))?;
    let config = NetworkConfig {
        prefix,
        pool,
        ..NetworkConfig::default()
    };
    Ok(Networks::new(&config, Arc::new(store)).without_orphan_grace())
}

/// Whether the run of VM `vm` still holds its lock.
fn run_is_live(dir: &Path, vm: &VmId) -> bool {
    let path = dir.join(format!("{vm}.lock"));
    if !path.exists() {
        return false;
    }
    match BuildLock::try_acquire(&path) {
        Ok(Some(_free)) => {
            let _ = std::fs::remove_file(&path);
            false
        }
        Ok(None) => true,
        // Unreadable: treated as live, so nothing of it is torn down.
        Err(_) => true,
    }
}
