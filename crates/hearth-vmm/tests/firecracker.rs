//! The Firecracker backend against a real firecracker binary, booting the
//! tiny test guest (which runs even where KVM cannot run Linux). Set
//! `HEARTH_FIRECRACKER` to a firecracker binary; without it these tests say
//! so in one line and pass.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_guestkit::kernel::{wrap_elf_as_bzimage, Compression};
use hearth_testkit::{tiny_guest_elf, tiny_guest_elf_ending, GuestEnd};
use hearth_types::{Channel, Disk, VmDescription, VmId};
use hearth_vmm::firecracker::client::ApiClient;
use hearth_vmm::firecracker::vsock::{self, AGENT_VSOCK_PORT};
use hearth_vmm::firecracker::{Firecracker, BINARY_ENV};
use hearth_vmm::{Hypervisor, RunningVm, VmmError};

/// Every test fails instead of hanging past this.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

fn firecracker(cache_dir: &Path) -> Option<Firecracker> {
    match std::env::var_os(BINARY_ENV).filter(|v| !v.is_empty()) {
        Some(binary) => Some(Firecracker::new(binary.into(), cache_dir.to_owned())),
        None => {
            eprintln!(
                "skipped: HEARTH_FIRECRACKER is not set (path to a firecracker binary); \
                 Firecracker tests need it"
            );
            None
        }
    }
}

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("the test ran past its deadline")
}

fn description(dir: &Path, kernel: PathBuf) -> VmDescription {
    VmDescription {
        id: VmId::generate(),
        kernel,
        initramfs: None,
        disks: vec![],
        vcpus: 1,
        memory_mib: 64,
        cmdline: "console=ttyS0".into(),
        run_dir: dir.join("run"),
        console_log: dir.join("console.log"),
        channels: Vec::new(),
    }
}

fn write_kernel(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Reads the live console until `marker` has been seen.
async fn wait_for_marker(vm: &mut RunningVm, marker: &str) -> String {
    let mut console = vm.console();
    let mut seen = String::new();
    while !seen.contains(marker) {
        match console.recv().await {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(err) => panic!("console ended before {marker:?} ({err}); got {seen:?}"),
        }
    }
    seen
}

/// Live processes whose command line mentions `dir` (every test has its
/// own run directory, so this finds only that test's firecracker).
fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.to_str().unwrap().as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_alive(*pid))
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

/// Running or sleeping, not a zombie waiting to be reaped.
fn is_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.chars().next());
    matches!(state, Some(s) if s != 'Z' && s != 'X')
}

/// Boots `kernel` and checks the marker reaches the stream and the log,
/// the exit is clean and Firecracker logged; returns start and marker times.
async fn boot_to_marker(fc: &Firecracker, dir: &Path, kernel: PathBuf, marker: &str) {
    let vm = description(dir, kernel);
    let spawned = Instant::now();
    let mut running = fc.start(&vm).await.expect("firecracker starts the guest");
    let started = spawned.elapsed();
    wait_for_marker(&mut running, marker).await;
    let marked = spawned.elapsed();
    let exit = running.wait().await;
    assert!(exit.success(), "firecracker ended with {exit}");
    let console = std::fs::read_to_string(&vm.console_log).unwrap();
    assert!(console.contains(marker), "console log: {console:?}");
    let log = std::fs::read_to_string(vm.run_dir.join("firecracker.log")).unwrap();
    assert!(
        log.contains("Running Firecracker"),
        "firecracker.log: {log:?}"
    );
    assert!(processes_using(dir).is_empty(), "firecracker left running");
    eprintln!("start() returned after {started:?}; marker seen after {marked:?}");
}

#[tokio::test]
async fn tiny_elf_guest_boots_prints_its_marker_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    let marker = "hearth-tiny-guest-elf-ok";
    let kernel = write_kernel(dir.path(), "tiny.elf", &tiny_guest_elf(marker));
    bounded(boot_to_marker(&fc, dir.path(), kernel, marker)).await;
}

#[tokio::test]
async fn bzimage_guest_is_extracted_and_boots() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let Some(fc) = firecracker(&cache) else {
        return;
    };
    let marker = "hearth-tiny-guest-bzimage-ok";
    let bzimage = wrap_elf_as_bzimage(&tiny_guest_elf(marker), Compression::Gzip);
    let kernel = write_kernel(dir.path(), "tiny.bzImage", &bzimage);
    bounded(boot_to_marker(&fc, dir.path(), kernel, marker)).await;
    let extracted = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(extracted, 1, "one ELF extracted into the cache");
}

#[tokio::test]
async fn a_file_that_is_not_a_kernel_is_refused_before_spawning() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    let kernel = write_kernel(dir.path(), "notes.txt", b"these are not the kernels\n");
    let vm = description(dir.path(), kernel);
    let err = bounded(fc.start(&vm)).await.unwrap_err();
    assert!(matches!(err, VmmError::Kernel { .. }), "{err:?}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains("notes.txt") && chain.contains("cannot"),
        "{chain}"
    );
    assert!(!vm.run_dir.join("firecracker.sock").exists());
    assert!(
        processes_using(dir.path()).is_empty(),
        "firecracker left running"
    );
}

#[tokio::test]
async fn a_missing_binary_is_not_found_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let fc = Firecracker::new(dir.path().join("no-firecracker"), dir.path().join("cache"));
    let kernel = write_kernel(dir.path(), "tiny.elf", &tiny_guest_elf("unused"));
    let err = bounded(fc.start(&description(dir.path(), kernel)))
        .await
        .unwrap_err();
    assert!(matches!(err, VmmError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("no-firecracker"), "{err}");
}

#[tokio::test]
async fn a_refused_api_call_is_named_with_firecrackers_message_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    let kernel = write_kernel(dir.path(), "tiny.elf", &tiny_guest_elf("unused"));
    let mut vm = description(dir.path(), kernel);
    vm.disks.push(Disk {
        path: dir.path().join("missing.ext4"),
        read_only: true,
    });
    let err = bounded(fc.start(&vm)).await.unwrap_err();
    let VmmError::Api { call, detail, .. } = &err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!(call, "PUT /drives/disk0");
    assert!(detail.contains("No such file"), "{detail}");
    assert!(
        processes_using(dir.path()).is_empty(),
        "firecracker left running"
    );
}

#[tokio::test]
async fn stop_kills_a_guest_that_never_exits_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    let marker = "hearth-tiny-guest-halts";
    let elf = tiny_guest_elf_ending(marker, GuestEnd::HaltForever);
    let vm = description(dir.path(), write_kernel(dir.path(), "halt.elf", &elf));
    bounded(async {
        let mut running = fc.start(&vm).await.expect("firecracker starts the guest");
        wait_for_marker(&mut running, marker).await;
        assert_eq!(
            running.exited(),
            None,
            "the halting guest must keep running"
        );
        let grace = Duration::from_millis(500);
        let asked = Instant::now();
        let exit = running.stop(grace).await;
        let took = asked.elapsed();
        assert!(took < grace + Duration::from_secs(2), "stop took {took:?}");
        assert_eq!(
            exit.signal,
            Some(libc::SIGKILL),
            "expected a kill, got {exit}"
        );
        assert!(
            processes_using(dir.path()).is_empty(),
            "firecracker left running"
        );
        eprintln!("stop({grace:?}) took {took:?}: {exit}");
    })
    .await;
}

fn agent_channel(vm: &mut VmDescription) -> PathBuf {
    let socket = vm.run_dir.join("agent.sock");
    vm.channels.push(Channel {
        name: "hearth.agent".into(),
        socket: socket.clone(),
    });
    socket
}

/// The tiny guest has no vsock driver, so Firecracker never accepts on the
/// socket (it starts serving it when the guest activates the device): a
/// CONNECT gets no answer and must end in a clear timeout, not a hang.
#[tokio::test]
async fn the_agent_channel_becomes_a_vsock_device_with_a_socket_that_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    let marker = "hearth-tiny-guest-vsock";
    let elf = tiny_guest_elf_ending(marker, GuestEnd::HaltForever);
    let mut vm = description(dir.path(), write_kernel(dir.path(), "halt.elf", &elf));
    let uds = agent_channel(&mut vm);
    std::fs::create_dir_all(&vm.run_dir).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&uds).unwrap()); // a stale socket
    bounded(async {
        let mut running = fc.start(&vm).await.expect("firecracker starts the guest");
        wait_for_marker(&mut running, marker).await;
        let api = ApiClient::new(vm.run_dir.join("firecracker.sock"), Duration::from_secs(2));
        let config: serde_json::Value =
            serde_json::from_slice(&api.get("/vm/config").await.unwrap()).unwrap();
        assert_eq!(config["vsock"]["guest_cid"], 3, "{config}");
        assert_eq!(
            config["vsock"]["uds_path"],
            uds.to_str().unwrap(),
            "{config}"
        );
        let meta = std::fs::symlink_metadata(&uds).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));

        let timeout = Duration::from_millis(500);
        let (uds2, started) = (uds.clone(), Instant::now());
        let err =
            tokio::task::spawn_blocking(move || vsock::connect(&uds2, AGENT_VSOCK_PORT, timeout))
                .await
                .unwrap()
                .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, vsock::VsockError::NoAnswer { port: 1024, .. }),
            "{err:?}"
        );
        assert!(took < timeout + Duration::from_secs(1), "took {took:?}");
        eprintln!(
            "CONNECT {AGENT_VSOCK_PORT} to a guest without a vsock driver: {err} (after {took:?})"
        );
        let exit = running.stop(Duration::from_millis(200)).await;
        assert!(
            processes_using(dir.path()).is_empty(),
            "firecracker left running: {exit}"
        );
    })
    .await;
}

#[tokio::test]
async fn two_channels_are_refused_before_firecracker_runs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    let kernel = write_kernel(dir.path(), "tiny.elf", &tiny_guest_elf("unused"));
    let mut vm = description(dir.path(), kernel);
    agent_channel(&mut vm);
    vm.channels.push(Channel {
        name: "second".into(),
        socket: vm.run_dir.join("second.sock"),
    });
    let err = bounded(fc.start(&vm)).await.unwrap_err();
    assert!(err.to_string().contains("2 channels"), "{err}");
    assert!(!vm.run_dir.join("firecracker.sock").exists());
}
