//! Firecracker snapshots through hearth's `Hypervisor` trait against a real
//! firecracker binary: the counting tiny guest is paused and saved, and a
//! new Firecracker process restores it over a writable layer of its own.
//! Set `HEARTH_FIRECRACKER`; without it the test says so in one line and
//! passes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_testkit::{count_of, counting_guest_elf};
use hearth_types::{Disk, VmDescription, VmId};
use hearth_vmm::firecracker::{Firecracker, BINARY_ENV};
use hearth_vmm::{Hypervisor, RunningVm};

/// The test fails instead of hanging past this.
const TEST_DEADLINE: Duration = Duration::from_secs(60);
/// A line comes every few tens of milliseconds.
const COUNT_WAIT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(2);

fn firecracker(cache_dir: &Path) -> Option<Firecracker> {
    match std::env::var_os(BINARY_ENV).filter(|v| !v.is_empty()) {
        Some(binary) => Some(Firecracker::new(binary.into(), cache_dir.to_owned())),
        None => {
            eprintln!(
                "skipped: HEARTH_FIRECRACKER is not set (path to a firecracker binary); \
                 the Firecracker snapshot test needs it"
            );
            None
        }
    }
}

/// A VM of the counting guest in `dir/name`, with a shared read-only image
/// and a writable layer of its own (both plain files: the guest never
/// reads them, Firecracker only opens them).
fn counting_vm(dir: &Path, name: &str) -> VmDescription {
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).unwrap();
    let layer = run_dir.join("layer.ext4");
    std::fs::write(&layer, vec![0u8; 1 << 20]).unwrap();
    VmDescription {
        id: VmId::generate(),
        kernel: dir.join("counting.elf"),
        initramfs: None,
        disks: vec![
            Disk {
                path: dir.join("image.ext4"),
                read_only: true,
                key: None,
            },
            Disk {
                path: layer,
                read_only: false,
                key: None,
            },
        ],
        vcpus: 1,
        memory_mib: 64,
        cmdline: "console=ttyS0".into(),
        console_log: run_dir.join("console.log"),
        run_dir,
        channels: Vec::new(),
        memory: None,
    }
}

/// The console as captured so far, after letting the capture catch up.
async fn console_now(vm: &VmDescription) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::read_to_string(&vm.console_log).unwrap_or_default()
}

/// Waits until the console shows at least `lines` complete count lines.
async fn wait_for_counts(running: &mut RunningVm, lines: usize) -> String {
    let mut console = running.console();
    let mut seen = String::new();
    while seen.lines().filter_map(count_of).count() < lines {
        match tokio::time::timeout(COUNT_WAIT, console.recv()).await {
            Ok(Ok(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Err(err)) => panic!("console ended after {seen:?} ({err})"),
            Err(_) => panic!("no count line for {COUNT_WAIT:?}; the console: {seen:?}"),
        }
    }
    seen
}

/// The counts of the complete lines of `text`; panics unless they run
/// 1, 2, 3, ... without a gap or a restart.
fn assert_consecutive(text: &str) -> u32 {
    let counts: Vec<u32> = text
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(count_of)
        .collect();
    let expected: Vec<u32> = (1..=counts.len() as u32).collect();
    assert_eq!(counts, expected, "the console: {text:?}");
    counts.len() as u32
}

/// Processes holding any file under `dir` open.
fn holders_of(dir: &Path) -> Vec<u32> {
    let pids = std::fs::read_dir("/proc").unwrap().flatten();
    let pids = pids.filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
    pids.filter(|pid| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten();
        fds.flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| target.starts_with(dir))
    })
    .collect()
}

/// The inodes `pid` holds open.
fn open_inodes(pid: u32) -> Vec<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten();
    fds.filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .map(|m| m.ino())
        .collect()
}

#[tokio::test]
async fn a_restored_counting_guest_goes_on_from_where_it_was_paused_in_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(dir.path()) else {
        return;
    };
    tokio::time::timeout(TEST_DEADLINE, snapshot_and_restore(&fc, dir.path()))
        .await
        .expect("the test ran past its deadline");
}

async fn snapshot_and_restore(fc: &Firecracker, dir: &Path) {
    std::fs::write(dir.join("counting.elf"), counting_guest_elf()).unwrap();
    std::fs::write(dir.join("image.ext4"), vec![0u8; 1 << 20]).unwrap();
    let source = counting_vm(dir, "source");
    let mut running = fc.start(&source).await.expect("the counting guest starts");
    wait_for_counts(&mut running, 3).await;
    let state: PathBuf = dir.join("state");
    let saving = Instant::now();
    fc.save(&source, &state)
        .await
        .expect("the snapshot is written");
    let saved_ms = saving.elapsed().as_millis();
    let at_pause = console_now(&source).await;
    fc.resume(&source).await.expect("the source runs on");
    running.stop(STOP_GRACE).await;

    let restored_vm = counting_vm(dir, "restored");
    let loading = Instant::now();
    let mut restored = fc
        .restore_reporting(&restored_vm, &state, Box::new(|_| {}))
        .await
        .expect("a new firecracker restores the snapshot");
    let restored_ms = loading.elapsed().as_millis();
    let after = wait_for_counts(&mut restored, 3).await;
    let total = assert_consecutive(&format!("{at_pause}{after}"));
    let paused_at = assert_consecutive(&at_pause);
    assert!(total > paused_at + 1, "the restored guest counted on");

    let own_layer = std::fs::metadata(&restored_vm.disks[1].path).unwrap().ino();
    let source_layer = std::fs::metadata(&source.disks[1].path).unwrap().ino();
    let held = open_inodes(restored.pid());
    assert!(
        held.contains(&own_layer),
        "the restored VM opened its own layer"
    );
    assert!(!held.contains(&source_layer), "and not the source's");

    restored.stop(STOP_GRACE).await;
    assert!(holders_of(dir).is_empty(), "a process still holds a file");
    std::fs::remove_dir_all(&state).unwrap();
    eprintln!(
        "paused at count {paused_at}; snapshot written in {saved_ms} ms; restored in \
         {restored_ms} ms; counted on to {total}"
    );
}
