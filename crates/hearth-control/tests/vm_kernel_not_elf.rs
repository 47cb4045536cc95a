//! `kernel_not_elf` on a real Firecracker: the tiny test guest wrapped as a
//! bzImage, which QEMU would boot but Firecracker cannot load. Given to
//! Firecracker itself it is refused, and the diagnosis of that run names
//! the rule with Firecracker's own words; given to hearth's Firecracker
//! backend, the same file is extracted to an ELF in the cache and boots,
//! and its diagnosis is clean. Without `HEARTH_FIRECRACKER` the test says
//! so in one line and passes (Firecracker does not run on this kind of
//! host everywhere; QEMU takes a bzImage as it is, so there is nothing to
//! break there).

use std::path::Path;
use std::time::Duration;

use hearth_control::diagnosis::{diagnose, Evidence};
use hearth_guestkit::kernel::{wrap_elf_as_bzimage, Compression};
use hearth_testkit::tiny_guest_elf;
use hearth_types::{Failure, FailureCode, VmDescription, VmId};
use hearth_vmm::firecracker::{Firecracker, BINARY_ENV};
use hearth_vmm::Hypervisor;

/// Every step fails instead of hanging past this.
const DEADLINE: Duration = Duration::from_secs(30);
const MARKER: &str = "hearth-tiny-guest-not-elf-ok";

#[tokio::test]
async fn a_bzimage_firecracker_cannot_load_is_kernel_not_elf_and_hearth_extracts_it() {
    let Some(binary) = std::env::var_os(BINARY_ENV).filter(|v| !v.is_empty()) else {
        println!(
            "skipped: HEARTH_FIRECRACKER is not set (path to a firecracker binary); the \
             kernel_not_elf guest needs Firecracker, since QEMU boots a bzImage as it is"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("tiny.bzImage");
    let bzimage = wrap_elf_as_bzimage(&tiny_guest_elf(MARKER), Compression::Gzip);
    std::fs::write(&kernel, bzimage).expect("write the bzImage");

    let log = firecracker_alone(Path::new(&binary), dir.path(), &kernel).await;
    let found = diagnose(&Evidence {
        hypervisor_log: log.clone(),
        failure: Some(Failure {
            code: FailureCode::StartFailed,
            message: "firecracker could not start the VM".into(),
        }),
        ..Evidence::default()
    });
    let f = found
        .iter()
        .find(|f| f.rule == "kernel_not_elf")
        .unwrap_or_else(|| panic!("no kernel_not_elf in {found:#?}\nfirecracker said:\n{log}"));
    eprintln!("{f:#?}");
    assert!(
        f.evidence
            .iter()
            .all(|l| log.contains(l.trim_end_matches('…'))),
        "the evidence is Firecracker's own output: {f:?}"
    );
    assert!(f.fix.contains("extracts the ELF"), "{f:?}");

    let console = through_hearth(binary.into(), dir.path(), &kernel).await;
    let found = diagnose(&Evidence {
        console,
        ..Evidence::default()
    });
    assert!(found.is_empty(), "{found:#?}");
    let extracted = std::fs::read_dir(dir.path().join("cache"))
        .expect("cache")
        .count();
    assert_eq!(extracted, 1, "hearth extracted the ELF once into its cache");
}

/// Firecracker started by hand with the bzImage as its kernel: its output.
async fn firecracker_alone(binary: &Path, dir: &Path, kernel: &Path) -> String {
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel, "boot_args": "console=ttyS0"},
        "drives": [],
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
    });
    let config_file = dir.join("vm.json");
    std::fs::write(&config_file, config.to_string()).expect("config file");
    let run = tokio::process::Command::new(binary)
        .arg("--no-api")
        .arg("--config-file")
        .arg(&config_file)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("firecracker ends at once on a kernel it cannot load")
        .expect("firecracker runs");
    assert!(!out.status.success(), "firecracker booted a bzImage?");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The same file through hearth's backend: booted to the guest's marker;
/// the console log.
async fn through_hearth(binary: std::path::PathBuf, dir: &Path, kernel: &Path) -> String {
    let fc = Firecracker::new(binary, dir.join("cache"));
    let vm = VmDescription {
        id: VmId::generate(),
        kernel: kernel.to_owned(),
        initramfs: None,
        disks: vec![],
        vcpus: 1,
        memory_mib: 64,
        cmdline: "console=ttyS0".into(),
        run_dir: dir.join("run"),
        console_log: dir.join("console.log"),
        channels: Vec::new(),
        memory: None,
    };
    let boot = async {
        let mut running = fc.start(&vm).await.expect("hearth's backend starts it");
        let exit = running.wait().await;
        assert!(exit.success(), "firecracker ended with {exit}");
    };
    tokio::time::timeout(DEADLINE, boot)
        .await
        .expect("the tiny guest ends by itself");
    let console = std::fs::read_to_string(&vm.console_log).expect("console log");
    assert!(console.contains(MARKER), "console: {console:?}");
    console
}
