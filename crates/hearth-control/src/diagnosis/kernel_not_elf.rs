//! `kernel_not_elf`: the hypervisor refused the kernel file because it is a
//! compressed bzImage (`vmlinuz`) where an uncompressed ELF `vmlinux` was
//! needed — Firecracker's `InvalidElfMagicNumber`. Nothing boots, so the
//! console is empty; the evidence is in the hypervisor's log or in the
//! failure the controller recorded when the start failed.

use hearth_types::api::Finding;

use super::log::{clean, contains_ci};
use super::{finding, Input};

/// What Firecracker (and loaders built on `linux-loader`) say about a
/// kernel that is not an ELF.
const SIGNS: &[&str] = &[
    "InvalidElfMagicNumber",
    "invalid kernel image",
    "Failed to read magic number",
];

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let ev = input.evidence;
    let failure = ev.failure.iter().map(|f| f.message.as_str());
    let events = ev.events.iter().map(String::as_str);
    let logs = input.hypervisor.lines().iter().chain(input.console.lines());
    let mut lines: Vec<String> = logs
        .map(String::as_str)
        .chain(failure)
        .chain(events)
        .filter(|l| SIGNS.iter().any(|s| contains_ci(l, s)))
        .map(clean)
        .collect();
    lines.dedup();
    if lines.is_empty() {
        return Vec::new();
    }
    lines.truncate(3);
    vec![finding(
        "kernel_not_elf",
        "the hypervisor could not load the kernel: the file is a compressed bzImage \
         (vmlinuz), and Firecracker loads only an uncompressed ELF vmlinux",
        lines,
        "hearth's Firecracker backend extracts the ELF from a bzImage by itself (once, into \
         its cache), so this comes from a hypervisor started with the bzImage directly. \
         Extract it with `hearth kernel extract VMLINUZ -o vmlinux` and boot that; \
         `hearth kernel inspect FILE` says what a kernel file is",
    )]
}

#[cfg(test)]
mod tests {
    use hearth_types::{Failure, FailureCode};

    use super::super::{diagnose, Evidence};

    #[test]
    fn firecrackers_elf_magic_error_in_its_log_is_named() {
        let ev = Evidence {
            hypervisor_log: "2024-05-01T10:00:00.000000000 [anonymous-instance:main] Running Firecracker v1.7.0\n\
                2024-05-01T10:00:00.120000000 [anonymous-instance:fc_api] The API server received a Put request on \"/actions\".\n\
                2024-05-01T10:00:00.121000000 [anonymous-instance:fc_api] Received Error. Status code: 400 Bad Request. Message: Start microvm error: Cannot load kernel due to invalid memory configuration or invalid kernel image: Elf(InvalidElfMagicNumber)\n"
                .into(),
            ..Evidence::default()
        };
        let found = diagnose(&ev);
        assert_eq!(found[0].rule, "kernel_not_elf");
        assert!(found[0].evidence[0].contains("InvalidElfMagicNumber"));
        assert!(found[0].fix.contains("hearth kernel extract"));
    }

    #[test]
    fn the_error_in_a_recorded_start_failure_is_found_too() {
        let ev = Evidence {
            failure: Some(Failure {
                code: FailureCode::StartFailed,
                message: "create step `hypervisor` failed: firecracker: InstanceStart: 400: Cannot load kernel due to invalid memory configuration or invalid kernel image: Elf(InvalidElfMagicNumber)".into(),
            }),
            ..Evidence::default()
        };
        let rules: Vec<_> = diagnose(&ev).into_iter().map(|f| f.rule).collect();
        assert_eq!(rules, ["kernel_not_elf", "start_failed"]);
    }
}
