//! Which creates a pooled VM can serve. A pooled VM booted cold has
//! nothing of a tenant's: its agent waits for the configuration before it
//! starts any service, so all of the configuration (hostname, environment,
//! files, services) is applied at hand-out. One restored from a template
//! runs the image's services already, so an environment for them cannot
//! be applied then. What is fixed at boot is never: the backend, the
//! kernel command line (a command), a NIC, a persistent disk, a snapshot
//! to restore, the size.

use hearth_types::api::CreateVm;
use hearth_types::BackendKind;

/// Why a create boots cold although its image has a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfit {
    /// Pooled VMs run on QEMU.
    Backend,
    /// A command is on the kernel command line, fixed at boot.
    Command,
    /// A NIC is made before the hypervisor starts: pooled VMs have one
    /// exactly when the server's default network is NAT (and the pool
    /// has no template), and a create must want the same.
    Network,
    /// A persistent VM's own disk is made at its first boot.
    Persistent,
    /// A restore is its own start, from its snapshot.
    Snapshot,
    /// A template's services run already, with the template's
    /// environment: an environment for them cannot be applied late.
    Environment,
}

impl Misfit {
    pub fn as_str(self) -> &'static str {
        match self {
            Misfit::Backend => "pooled VMs run on qemu",
            Misfit::Command => "a command is fixed at boot",
            Misfit::Network => {
                "a NIC is fixed at boot: the pool's VMs have one only on a server whose default network is nat (and a pool without a template), and the create must want the same"
            }
            Misfit::Persistent => "a persistent VM's disk is made at its first boot",
            Misfit::Snapshot => "a restore starts from its snapshot",
            Misfit::Environment => {
                "the pool's template runs the image's services already, with no environment of the create's"
            }
        }
    }
}

/// Whether `req` (its size already filled in) can be served by a pooled
/// VM, restored from a template (`templated`) or booted cold; the size
/// itself is matched by the store's take.
/// `nic`: whether the pool's VMs have a NIC.
pub(super) fn fits(req: &CreateVm, templated: bool, nic: bool) -> Result<(), Misfit> {
    if req.backend != BackendKind::Qemu {
        return Err(Misfit::Backend);
    }
    if !req.command.is_empty() {
        return Err(Misfit::Command);
    }
    if req.network.is_some() != nic {
        return Err(Misfit::Network);
    }
    if req.persistent {
        return Err(Misfit::Persistent);
    }
    if req.from_snapshot.is_some() {
        return Err(Misfit::Snapshot);
    }
    if templated && !req.config.env.is_empty() {
        return Err(Misfit::Environment);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hearth_types::api::NetworkMode;
    use hearth_types::guest::{EnvVar, GuestConfig};

    use super::*;

    #[test]
    fn configuration_fits_and_what_is_fixed_at_boot_does_not() {
        let config = GuestConfig {
            hostname: Some("h".into()),
            env: vec![EnvVar {
                name: "A".into(),
                value: "1".into(),
            }],
            ..GuestConfig::default()
        };
        let ok = CreateVm {
            config,
            readiness_timeout_secs: Some(30),
            ..CreateVm::default()
        };
        assert_eq!(fits(&ok, false, false), Ok(()));
        assert_eq!(fits(&ok, true, false), Err(Misfit::Environment));
        let plain = CreateVm {
            config: GuestConfig {
                env: Vec::new(),
                ..ok.config.clone()
            },
            ..ok.clone()
        };
        assert_eq!(fits(&plain, true, false), Ok(()));
        let fc = CreateVm {
            backend: BackendKind::Firecracker,
            ..ok.clone()
        };
        assert_eq!(fits(&fc, false, false), Err(Misfit::Backend));
        let cmd = CreateVm {
            command: vec!["true".into()],
            ..ok.clone()
        };
        assert_eq!(fits(&cmd, false, false), Err(Misfit::Command));
        let nic = CreateVm {
            network: Some(NetworkMode::Nat),
            ..ok
        };
        assert_eq!(fits(&nic, false, false), Err(Misfit::Network));
        assert_eq!(fits(&nic, false, true), Ok(()), "a NIC'd pool serves it");
        assert_eq!(fits(&plain, true, true), Err(Misfit::Network));
    }
}
