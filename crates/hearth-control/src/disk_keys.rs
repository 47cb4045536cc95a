//! The keys of persistent VMs' encrypted disks. A persistent VM on QEMU
//! keeps its disk as a qcow2 that QEMU encrypts with LUKS
//! (`docs/persistent-vms.md`): whatever the guest writes, credential files
//! included, reaches the host's disk only as ciphertext. Its key is 32
//! random bytes made at the disk's creation and sealed in the vault under
//! the VM's id; it is opened again at each boot and handed to QEMU through
//! a pipe, and destroyed with the disk by `rm`. Nothing here logs a key.

use std::sync::Arc;

use async_trait::async_trait;
use hearth_store::CredentialOwner;
use hearth_types::api::Vm;
use hearth_types::{DiskKey, ProviderId, UserName};
use hearth_vault::{CredentialFile, CredentialFiles, Secret, Vault};
use rand::RngCore as _;

/// Where the controller gets disk keys from.
#[async_trait]
pub trait DiskKeys: Send + Sync + std::fmt::Debug {
    /// The key of `vm`'s disk, made and sealed now when `make` and it has
    /// none yet. An error is a sentence naming the problem and the fix.
    async fn key(&self, vm: &Vm, make: bool) -> Result<DiskKey, String>;
    /// Destroys `vm`'s key (nothing to do when it has none).
    async fn destroy(&self, vm: &Vm) -> Result<(), String>;
}

/// The provider name a disk key is sealed under, as the credential of a
/// "user" named by the VM's id in the VM's tenant.
pub const DISK_KEY_PROVIDER: &str = "hearth-disk-key";
/// The one file of a sealed disk key.
const KEY_FILE: &str = "disk.key";

/// Disk keys sealed in hearth's vault.
#[derive(Debug, Clone)]
pub struct VaultDiskKeys {
    vault: Arc<Vault>,
}

impl VaultDiskKeys {
    pub fn new(vault: Arc<Vault>) -> Self {
        VaultDiskKeys { vault }
    }
}

/// The vault's name for `vm`'s disk key.
pub fn disk_key_owner(vm: &Vm) -> CredentialOwner {
    CredentialOwner {
        tenant: vm.tenant.clone(),
        user: UserName::try_from(vm.id.as_str().to_owned()).expect("a VM id is a valid user name"),
        provider: ProviderId::try_from(DISK_KEY_PROVIDER.to_owned())
            .expect("the disk key provider is a valid provider id"),
    }
}

#[async_trait]
impl DiskKeys for VaultDiskKeys {
    async fn key(&self, vm: &Vm, make: bool) -> Result<DiskKey, String> {
        let owner = disk_key_owner(vm);
        let vault_error = |e: hearth_vault::VaultError| {
            format!(
                "the vault could not give VM {}'s disk key: {}",
                vm.id,
                hearth_types::error_chain(&e)
            )
        };
        if let Some(opened) = self.vault.open_current(&owner).await.map_err(vault_error)? {
            return key_of(&opened.files, vm);
        }
        if !make {
            return Err(format!(
                "VM {}'s encrypted disk has no key in the vault (it was deleted, or the database was restored from before the disk was made): the disk cannot be opened; remove the VM (`hearth vm rm {}`)",
                vm.id, vm.id
            ));
        }
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let files = CredentialFiles {
            files: vec![CredentialFile {
                path: KEY_FILE.to_owned(),
                mode: 0o600,
                contents: Secret::new(bytes.to_vec()),
            }],
        };
        self.vault.seal(&owner, &files).await.map_err(vault_error)?;
        key_of(&files, vm)
    }

    async fn destroy(&self, vm: &Vm) -> Result<(), String> {
        self.vault
            .delete(&disk_key_owner(vm))
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "could not destroy VM {}'s disk key in the vault: {}",
                    vm.id,
                    hearth_types::error_chain(&e)
                )
            })
    }
}

fn key_of(files: &CredentialFiles, vm: &Vm) -> Result<DiskKey, String> {
    files
        .files
        .iter()
        .find(|f| f.path == KEY_FILE)
        .and_then(|f| DiskKey::from_bytes(f.contents.expose()))
        .ok_or_else(|| format!("VM {}'s disk key in the vault is not a 32-byte key", vm.id))
}
