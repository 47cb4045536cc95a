//! The words of persistent VMs: a VM that keeps its own writable disk
//! across stop and start, what it does when its hypervisor ends on its own
//! (its restart policy), and the bounds a create request is checked
//! against. The rules that act on them live in `hearth-control`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the controller does when a persistent VM's run ends without a
/// stop being asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never started again by the controller: a failed VM stays failed,
    /// with its failure and diagnosis, until someone starts or removes it.
    #[default]
    Never,
    /// Started again after a failure (the hypervisor died, the kernel
    /// panicked, the boot timed out), with backoff.
    OnFailure,
    /// Also after the guest powered off by itself and after the host went
    /// down; only a requested stop (or an idle stop) keeps it stopped.
    Always,
}

impl RestartPolicy {
    pub const ALL: [RestartPolicy; 3] = [
        RestartPolicy::Never,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = crate::lifecycle::UnknownWord;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RestartPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| crate::lifecycle::UnknownWord(s.to_owned()))
    }
}

/// The persistent disk's size when a request gives none, MiB.
pub const DEFAULT_DISK_MIB: u32 = 1024;
/// The smallest persistent disk, MiB (ext4 with a journal needs room).
pub const MIN_DISK_MIB: u32 = 64;
/// The largest persistent disk, MiB (256 GiB; the file is sparse).
pub const MAX_DISK_MIB: u32 = 256 * 1024;
/// The shortest idle period before an idle stop, seconds.
pub const MIN_IDLE_STOP_SECS: u64 = 5;
/// The longest idle period, seconds (30 days).
pub const MAX_IDLE_STOP_SECS: u64 = 30 * 24 * 3600;

/// What a create request asks of persistence, checked: the caller's words
/// for what is wrong and how to fix it.
pub fn check(
    persistent: bool,
    disk_mib: Option<u32>,
    restart: Option<RestartPolicy>,
    idle_stop_secs: Option<u64>,
) -> Result<(), String> {
    if !persistent {
        let given = [
            disk_mib.map(|_| "disk_mib"),
            restart.map(|_| "restart"),
            idle_stop_secs.map(|_| "idle_stop_secs"),
        ];
        if let Some(field) = given.into_iter().flatten().next() {
            return Err(format!(
                "{field} is only for persistent VMs: add \"persistent\": true, or drop {field}"
            ));
        }
        return Ok(());
    }
    if let Some(mib) = disk_mib.filter(|m| !(MIN_DISK_MIB..=MAX_DISK_MIB).contains(m)) {
        return Err(format!(
            "disk_mib {mib} is out of range: give {MIN_DISK_MIB} to {MAX_DISK_MIB} MiB"
        ));
    }
    let idle_range = MIN_IDLE_STOP_SECS..=MAX_IDLE_STOP_SECS;
    if let Some(secs) = idle_stop_secs.filter(|s| !idle_range.contains(s)) {
        return Err(format!(
            "idle_stop_secs {secs} is out of range: give {MIN_IDLE_STOP_SECS} to \
             {MAX_IDLE_STOP_SECS} seconds, or leave it out to never stop an idle VM"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_through_their_words() {
        for p in RestartPolicy::ALL {
            assert_eq!(p.as_str().parse::<RestartPolicy>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        let err = serde_json::from_str::<RestartPolicy>("\"sometimes\"").unwrap_err();
        assert!(err.to_string().contains("on-failure"), "{err}");
    }

    #[test]
    fn bounds_are_checked_and_named() {
        assert_eq!(check(false, None, None, None), Ok(()));
        assert_eq!(check(true, None, None, None), Ok(()));
        assert_eq!(
            check(true, Some(64), Some(RestartPolicy::Always), Some(5)),
            Ok(())
        );
        let small = check(true, Some(63), None, None).unwrap_err();
        assert!(
            small.contains("disk_mib 63") && small.contains("64 to 262144"),
            "{small}"
        );
        let big = check(true, Some(MAX_DISK_MIB + 1), None, None).unwrap_err();
        assert!(big.contains("out of range"), "{big}");
        let idle = check(true, None, None, Some(1)).unwrap_err();
        assert!(idle.contains("idle_stop_secs 1"), "{idle}");
        let lone = check(false, None, Some(RestartPolicy::OnFailure), None).unwrap_err();
        assert!(lone.contains("\"persistent\": true"), "{lone}");
    }
}
