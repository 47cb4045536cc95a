//! The Firecracker backend against a real firecracker binary, booting the
//! tiny test guest (which runs even where KVM cannot run Linux). Set
//! `HEARTH_FIRECRACKER` to a firecracker binary; without it these tests say
//! so in one line and pass.
//!
//! The jailer test needs `HEARTH_JAILER` (Firecracker's jailer) and root
//! too.
//!
//! The agent's vsock channel is tested with a second hand-made guest
//! (`vsock_guest` below) that drives Firecracker's real vsock device just
//! far enough to refuse or accept one host connection.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_guestkit::kernel::{wrap_elf_as_bzimage, Compression};
use hearth_testkit::{tiny_guest_elf, tiny_guest_elf_ending, GuestEnd};
use hearth_types::{Channel, Disk, VmDescription, VmId};
use hearth_vmm::firecracker::client::ApiClient;
use hearth_vmm::firecracker::jail::{jailed_vm, Jail, JAILER_ENV, JAIL_DIR};
use hearth_vmm::firecracker::vsock::{self, AGENT_VSOCK_PORT};
use hearth_vmm::firecracker::{Firecracker, BINARY_ENV};
use hearth_vmm::isolation::Isolation;
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
        memory: None,
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
        key: None,
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
        // Named relative to the run directory (Firecracker's working
        // directory), so a snapshot of it names a restored VM's own socket.
        let relative = uds.strip_prefix(&vm.run_dir).unwrap();
        assert_eq!(
            config["vsock"]["uds_path"],
            relative.to_str().unwrap(),
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

/// Boots the vsock guest answering as `reply` and waits until its driver
/// is ready; returns the running VM and its vsock socket.
async fn boot_vsock_guest(
    fc: &Firecracker,
    dir: &Path,
    reply: vsock_guest::Reply,
) -> (RunningVm, PathBuf) {
    let kernel = write_kernel(dir, "vsock-guest.elf", &vsock_guest::elf(reply));
    let mut vm = description(dir, kernel);
    let uds = agent_channel(&mut vm);
    let mut running = fc.start(&vm).await.expect("firecracker starts the guest");
    let console = wait_for_marker(&mut running, "vsock-guest: ").await;
    if !console.contains("ready") {
        let rest = wait_for_marker(&mut running, "\n").await;
        panic!("the vsock guest failed: {console}{rest}");
    }
    (running, uds)
}

async fn connect_blocking(
    uds: &Path,
    port: u32,
) -> Result<std::os::unix::net::UnixStream, vsock::VsockError> {
    let uds = uds.to_owned();
    tokio::task::spawn_blocking(move || vsock::connect(&uds, port, Duration::from_secs(5)))
        .await
        .unwrap()
}

/// The guest answers the request with RST, as Linux does for a port
/// nobody listens on; Firecracker then drops the host's connection.
#[tokio::test]
async fn connect_to_a_port_nobody_listens_on_is_no_listener() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    bounded(async {
        let (mut running, uds) =
            boot_vsock_guest(&fc, dir.path(), vsock_guest::Reply::Refuse).await;
        let started = Instant::now();
        let err = connect_blocking(&uds, AGENT_VSOCK_PORT).await.unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, vsock::VsockError::NoListener { port: 1024 }),
            "{err:?}"
        );
        wait_for_marker(&mut running, "vsock-guest: refused").await;
        eprintln!("refused CONNECT: {err} (after {took:?})");
        running.stop(Duration::from_millis(200)).await;
        assert!(
            processes_using(dir.path()).is_empty(),
            "firecracker left running"
        );
    })
    .await;
}

/// The guest accepts: the connector gets Firecracker's `OK`, then the
/// guest's bytes, and the host's bytes reach the guest.
#[tokio::test]
async fn an_accepted_connect_carries_bytes_both_ways_through_firecracker() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    bounded(async {
        let (mut running, uds) =
            boot_vsock_guest(&fc, dir.path(), vsock_guest::Reply::Accept).await;
        let started = Instant::now();
        let mut stream = connect_blocking(&uds, AGENT_VSOCK_PORT).await.unwrap();
        let took = started.elapsed();
        let greeting = tokio::task::spawn_blocking(move || {
            let mut greeting = vec![0u8; vsock_guest::GREETING.len()];
            stream.read_exact(&mut greeting).unwrap();
            stream.write_all(b"ping").unwrap();
            (greeting, stream)
        });
        let (greeting, _stream) = greeting.await.unwrap();
        assert_eq!(greeting, vsock_guest::GREETING);
        wait_for_marker(&mut running, "vsock-guest: got ping").await;
        eprintln!("CONNECT {AGENT_VSOCK_PORT} answered OK after {took:?}");
        running.stop(Duration::from_millis(200)).await;
        assert!(
            processes_using(dir.path()).is_empty(),
            "firecracker left running"
        );
    })
    .await;
}

/// A tiny guest with just enough of a virtio-vsock driver to answer one
/// host-initiated connection: it finds Firecracker's vsock device, sets up
/// its three queues (all prepared in the ELF image itself), waits for the
/// connection request and answers it, printing what it does on the serial
/// console. It is not Linux, but Firecracker's side of the handshake (the
/// muxer that writes `OK <port>` or hangs up) is the real one.
mod vsock_guest {
    /// Where the image is loaded and entered (above Firecracker's 1 MiB).
    const LOAD: u64 = 0x100_0000;
    const CODE: usize = 0x80;
    /// Firecracker's first virtio-mmio slot (3 GiB + 4 KiB): with no disk
    /// and no network the vsock device is the only one, so it is there.
    const MMIO: u64 = 0xc000_1000;
    /// Firecracker's boot page tables map only the first GiB; this page
    /// directory maps the GiB at 3 GiB, where the device registers are.
    const PD: usize = 0x1000;
    /// Queue q (0 rx, 1 tx, 2 event) at `QUEUES + q * 0x1000`: descriptors,
    /// then the available ring at +0x100, the used ring at +0x200.
    const QUEUES: usize = 0x2000;
    const QUEUE_SIZE: u16 = 8;
    const RX_BUFFERS: usize = 0x6000;
    const RX_BUFFER_LEN: usize = 0x400;
    const RX_BUFFER_COUNT: usize = 4;
    /// The reply (RESPONSE or RST) and, for an accepting guest, one data
    /// packet, both sent on the tx queue.
    const REPLY: usize = 0x7000;
    const DATA: usize = 0x7100;
    const IMAGE_LEN: usize = 0x8000;
    const SERIAL: u16 = 0x3f8;
    const HEADER_LEN: usize = 44;
    const CREDIT: u32 = 64 * 1024;
    /// Virtio-vsock operations.
    const OP_REQUEST: u16 = 1;
    const OP_RESPONSE: u16 = 2;
    const OP_RST: u16 = 3;
    const OP_RW: u16 = 5;

    /// What the guest does with the connection request.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Reply {
        /// RST, as a Linux guest does when nothing listens on the port.
        Refuse,
        /// RESPONSE, then sends `greeting`, then prints the first data the
        /// host sends as `guest got: <4 bytes>`.
        Accept,
    }

    pub const GREETING: &[u8] = b"hello from the guest\n";

    pub fn elf(reply: Reply) -> Vec<u8> {
        let mut image = vec![0u8; IMAGE_LEN];
        image[..64].copy_from_slice(&elf_header());
        image[64..120].copy_from_slice(&program_header());
        let code = code(reply);
        assert!(
            CODE + code.len() <= PD,
            "the code overran the page directory"
        );
        image[CODE..CODE + code.len()].copy_from_slice(&code);
        // 2 MiB page at 3 GiB: present, writable, uncached, large.
        put(&mut image, PD, &(0xc000_0000u64 | 0x9b).to_le_bytes());
        queues(&mut image);
        put(&mut image, REPLY, &header(0, 0));
        put(&mut image, DATA, &header(GREETING.len() as u32, OP_RW));
        put(&mut image, DATA + HEADER_LEN, GREETING);
        image
    }

    fn put(image: &mut [u8], at: usize, bytes: &[u8]) {
        image[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn queue(q: usize) -> usize {
        QUEUES + q * 0x1000
    }

    /// rx: every buffer available and writable; tx: the reply and the data
    /// packet described, made available by the code; event: empty.
    fn queues(image: &mut [u8]) {
        for i in 0..RX_BUFFER_COUNT {
            let buffer = LOAD + (RX_BUFFERS + i * RX_BUFFER_LEN) as u64;
            put(
                image,
                queue(0) + i * 16,
                &descriptor(buffer, RX_BUFFER_LEN as u32, 2),
            );
            put(image, queue(0) + 0x104 + i * 2, &(i as u16).to_le_bytes());
        }
        put(
            image,
            queue(0) + 0x102,
            &(RX_BUFFER_COUNT as u16).to_le_bytes(),
        );
        let data_len = (HEADER_LEN + GREETING.len()) as u32;
        put(
            image,
            queue(1),
            &descriptor(LOAD + REPLY as u64, HEADER_LEN as u32, 0),
        );
        put(
            image,
            queue(1) + 16,
            &descriptor(LOAD + DATA as u64, data_len, 0),
        );
        put(image, queue(1) + 0x104, &[0, 0, 1, 0]);
    }

    fn descriptor(addr: u64, len: u32, flags: u16) -> Vec<u8> {
        let mut d = addr.to_le_bytes().to_vec();
        d.extend(len.to_le_bytes());
        d.extend(flags.to_le_bytes());
        d.extend(0u16.to_le_bytes()); // next
        d
    }

    /// A stream packet header from the guest (CID 3) to the host (CID 2);
    /// the ports are filled in by the code from the request.
    fn header(len: u32, op: u16) -> Vec<u8> {
        let mut h = 3u64.to_le_bytes().to_vec(); // src_cid
        h.extend(2u64.to_le_bytes()); // dst_cid
        h.extend(0u32.to_le_bytes()); // src_port
        h.extend(0u32.to_le_bytes()); // dst_port
        h.extend(len.to_le_bytes());
        h.extend(1u16.to_le_bytes()); // type: stream
        h.extend(op.to_le_bytes());
        h.extend(0u32.to_le_bytes()); // flags
        h.extend(CREDIT.to_le_bytes()); // buf_alloc
        h.extend(0u32.to_le_bytes()); // fwd_cnt
        assert_eq!(h.len(), HEADER_LEN);
        h
    }

    fn code(reply: Reply) -> Vec<u8> {
        let mut a = Asm::default();
        let at = |offset: usize| LOAD + offset as u64;
        // Map the device: PDPT entry 3 (Firecracker's PDPT is at 0xa000).
        a.mov_rdi(0xa000 + 3 * 8);
        a.mov_rax(at(PD) | 3);
        a.store_rax();
        a.reload_cr3();
        // Is it a virtio-mmio (magic "virt") vsock (device id 19)?
        a.mov_rdi(MMIO);
        a.load_eax(0);
        a.cmp_eax(0x7472_6976);
        a.jne("no_device");
        a.load_eax(8);
        a.cmp_eax(19);
        a.jne("no_device");
        // Reset, ACKNOWLEDGE, DRIVER, VIRTIO_F_VERSION_1, FEATURES_OK.
        for (reg, value) in [
            (0x70, 0),
            (0x70, 1),
            (0x70, 3),
            (0x24, 1),
            (0x20, 1),
            (0x70, 11),
        ] {
            a.mmio_write(reg, value);
        }
        for q in 0..3 {
            let base = at(queue(q));
            for (reg, value) in [
                (0x30, q as u32),
                (0x38, u32::from(QUEUE_SIZE)),
                (0x80, base as u32),
                (0x84, 0),
                (0x90, (base + 0x100) as u32),
                (0x94, 0),
                (0xa0, (base + 0x200) as u32),
                (0xa4, 0),
                (0x44, 1),
            ] {
                a.mmio_write(reg, value);
            }
        }
        a.mmio_write(0x70, 15); // DRIVER_OK: Firecracker activates the device
        a.mov_rdi(MMIO);
        a.load_eax(0x70);
        a.test_eax(0x40 | 0x80); // DEVICE_NEEDS_RESET or FAILED
        a.jne("activation_failed");
        a.print("vsock-guest: ready\n");
        // Wait for the first rx packet: the host's connection request.
        a.label("wait_request");
        a.pause();
        a.mov_rdi(at(queue(0) + 0x202));
        a.load_word(0);
        a.test_eax(0xffff);
        a.je("wait_request");
        a.mov_rsi(at(RX_BUFFERS));
        a.load_word_rsi(30);
        a.cmp_eax(u32::from(OP_REQUEST));
        a.jne("unexpected");
        // Answer on the request's ports, swapped.
        a.mov_rdi(at(REPLY));
        a.copy_u32(16, 20);
        a.copy_u32(20, 16);
        a.mov_rdi(at(DATA));
        a.copy_u32(16, 20);
        a.copy_u32(20, 16);
        let op = match reply {
            Reply::Refuse => OP_RST,
            Reply::Accept => OP_RESPONSE,
        };
        a.mov_rdi(at(REPLY + 30));
        a.store_word(op);
        let sent = match reply {
            Reply::Refuse => 1,
            Reply::Accept => 2,
        };
        a.mov_rdi(at(queue(1) + 0x102));
        a.store_word(sent);
        a.mmio_write(0x50, 1); // QueueNotify: tx
        match reply {
            Reply::Refuse => a.print("vsock-guest: refused\n"),
            Reply::Accept => {
                a.print("vsock-guest: accepted\n");
                wait_for_data(&mut a, at);
            }
        }
        a.halt_forever();
        a.label("no_device");
        a.print("vsock-guest: no vsock device at the first virtio-mmio slot\n");
        a.halt_forever();
        a.label("activation_failed");
        a.print("vsock-guest: firecracker did not activate the device\n");
        a.halt_forever();
        a.label("unexpected");
        a.print("vsock-guest: the first packet was not a connection request\n");
        a.halt_forever();
        a.finish()
    }

    /// Polls the other rx buffers for a data packet and prints its first
    /// four bytes.
    fn wait_for_data(a: &mut Asm, at: impl Fn(usize) -> u64) {
        a.label("wait_data");
        a.pause();
        for i in 1..RX_BUFFER_COUNT {
            a.mov_rsi(at(RX_BUFFERS + i * RX_BUFFER_LEN));
            a.load_word_rsi(30);
            a.cmp_eax(u32::from(OP_RW));
            a.je("got_data");
        }
        a.jmp("wait_data");
        a.label("got_data");
        a.print("vsock-guest: got ");
        for k in 0..4 {
            a.load_al_rsi(HEADER_LEN as u8 + k);
            a.out_al();
        }
        a.print("\n");
    }

    /// Just the x86-64 instructions the guest uses; jumps are rel32 to
    /// labels patched at the end.
    #[derive(Default)]
    struct Asm {
        code: Vec<u8>,
        labels: Vec<(&'static str, usize)>,
        fixups: Vec<(&'static str, usize)>,
    }

    impl Asm {
        fn emit(&mut self, bytes: &[u8]) {
            self.code.extend_from_slice(bytes);
        }
        fn mov_rdi(&mut self, v: u64) {
            self.emit(&[0x48, 0xbf]);
            self.emit(&v.to_le_bytes());
        }
        fn mov_rsi(&mut self, v: u64) {
            self.emit(&[0x48, 0xbe]);
            self.emit(&v.to_le_bytes());
        }
        fn mov_rax(&mut self, v: u64) {
            self.emit(&[0x48, 0xb8]);
            self.emit(&v.to_le_bytes());
        }
        /// mov [rdi], rax
        fn store_rax(&mut self) {
            self.emit(&[0x48, 0x89, 0x07]);
        }
        /// mov rax, cr3; mov cr3, rax: flushes the TLB.
        fn reload_cr3(&mut self) {
            self.emit(&[0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8]);
        }
        /// mov eax, [rdi + disp32]
        fn load_eax(&mut self, disp: u32) {
            self.emit(&[0x8b, 0x87]);
            self.emit(&disp.to_le_bytes());
        }
        /// movzx eax, word [rdi + disp32]
        fn load_word(&mut self, disp: u32) {
            self.emit(&[0x0f, 0xb7, 0x87]);
            self.emit(&disp.to_le_bytes());
        }
        /// movzx eax, word [rsi + disp8]
        fn load_word_rsi(&mut self, disp: u8) {
            self.emit(&[0x0f, 0xb7, 0x46, disp]);
        }
        /// mov al, [rsi + disp8]
        fn load_al_rsi(&mut self, disp: u8) {
            self.emit(&[0x8a, 0x46, disp]);
        }
        /// mov word [rdi], imm16
        fn store_word(&mut self, v: u16) {
            self.emit(&[0x66, 0xc7, 0x07]);
            self.emit(&v.to_le_bytes());
        }
        /// mov eax, [rsi + from]; mov [rdi + to], eax (rsi: the request)
        fn copy_u32(&mut self, from: u8, to: u8) {
            self.emit(&[0x8b, 0x46, from, 0x89, 0x47, to]);
        }
        /// mov rdi, MMIO + reg; mov dword [rdi], imm32
        fn mmio_write(&mut self, reg: u64, v: u32) {
            self.mov_rdi(MMIO + reg);
            self.emit(&[0xc7, 0x07]);
            self.emit(&v.to_le_bytes());
        }
        fn cmp_eax(&mut self, v: u32) {
            self.emit(&[0x3d]);
            self.emit(&v.to_le_bytes());
        }
        fn test_eax(&mut self, v: u32) {
            self.emit(&[0xa9]);
            self.emit(&v.to_le_bytes());
        }
        fn pause(&mut self) {
            self.emit(&[0xf3, 0x90]);
        }
        fn out_al(&mut self) {
            self.emit(&[0x66, 0xba]);
            self.emit(&SERIAL.to_le_bytes());
            self.emit(&[0xee]);
        }
        fn print(&mut self, text: &str) {
            for &b in text.as_bytes() {
                self.emit(&[0xb0, b]);
                self.out_al();
            }
        }
        fn halt_forever(&mut self) {
            self.emit(&[0xf4, 0xeb, 0xfd]);
        }
        fn label(&mut self, name: &'static str) {
            self.labels.push((name, self.code.len()));
        }
        fn jump(&mut self, opcode: &[u8], target: &'static str) {
            self.emit(opcode);
            self.fixups.push((target, self.code.len()));
            self.emit(&[0; 4]);
        }
        fn je(&mut self, target: &'static str) {
            self.jump(&[0x0f, 0x84], target);
        }
        fn jne(&mut self, target: &'static str) {
            self.jump(&[0x0f, 0x85], target);
        }
        fn jmp(&mut self, target: &'static str) {
            self.jump(&[0xe9], target);
        }
        fn finish(mut self) -> Vec<u8> {
            for (target, at) in &self.fixups {
                let (_, to) = self.labels.iter().find(|(n, _)| n == target).unwrap();
                let rel = *to as i64 - (*at as i64 + 4);
                self.code[*at..*at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
            }
            self.code
        }
    }

    fn elf_header() -> Vec<u8> {
        let mut h = b"\x7fELF".to_vec();
        h.extend([2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // 64-bit LE, padding
        h.extend(2u16.to_le_bytes()); // ET_EXEC
        h.extend(62u16.to_le_bytes()); // EM_X86_64
        h.extend(1u32.to_le_bytes());
        h.extend((LOAD + CODE as u64).to_le_bytes()); // e_entry
        h.extend(64u64.to_le_bytes()); // e_phoff
        h.extend(0u64.to_le_bytes()); // e_shoff
        h.extend(0u32.to_le_bytes()); // e_flags
        for v in [64u16, 56, 1, 0, 0, 0] {
            h.extend(v.to_le_bytes()); // ehsize, phentsize, phnum, sh*
        }
        h
    }

    fn program_header() -> Vec<u8> {
        let mut p = 1u32.to_le_bytes().to_vec(); // PT_LOAD
        p.extend(7u32.to_le_bytes()); // RWX
        p.extend(0u64.to_le_bytes()); // p_offset
        p.extend(LOAD.to_le_bytes()); // p_vaddr
        p.extend(LOAD.to_le_bytes()); // p_paddr
        p.extend((IMAGE_LEN as u64).to_le_bytes()); // p_filesz
        p.extend((IMAGE_LEN as u64).to_le_bytes()); // p_memsz
        p.extend(0x1000u64.to_le_bytes()); // p_align
        p
    }
}

/// Firecracker through its jailer (`HEARTH_JAILER`, with root): the guest
/// runs as the VM's uid, chrooted in its jail, in its cgroup; the jail
/// and the cgroup are gone when it ends.
#[tokio::test]
async fn a_jailed_firecracker_runs_the_guest_as_its_own_user_in_its_jail_and_cgroup() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    let Some(jailer) = std::env::var_os(JAILER_ENV).filter(|v| !v.is_empty()) else {
        eprintln!("skipped: HEARTH_JAILER is not set (path to Firecracker's jailer); the jailer test needs it");
        return;
    };
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the jailer needs root");
        return;
    }
    let isolation = Arc::new(Isolation::for_host());
    let fc = fc
        .with_jailer(Some(jailer.into()))
        .isolated(Arc::clone(&isolation));
    let marker = "hearth-jailed-guest";
    let elf = tiny_guest_elf_ending(marker, GuestEnd::HaltForever);
    let mut vm = description(dir.path(), write_kernel(dir.path(), "halt.elf", &elf));
    // As `hearth serve` lays VMs out: `<vms>/<id>/`.
    vm.run_dir = dir.path().join(vm.id.as_str());
    bounded(async {
        let mut running = fc.start(&vm).await.expect("the jailer starts firecracker");
        wait_for_marker(&mut running, marker).await;
        let report = running.isolation().expect("a report").clone();
        assert!(report.jailer, "{report:?}");
        let uid = report.uid.expect("a uid of its own");
        let status = std::fs::read_to_string(format!("/proc/{}/status", running.pid())).unwrap();
        assert!(
            status.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")),
            "{status}"
        );
        // Its root, seen through its mount namespace, is the jail's directory.
        let id = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let root = PathBuf::from(format!("/proc/{}/root/", running.pid()));
        let jail = Jail::of(&vm, fc.binary()).root;
        assert_eq!(id(&root), id(&jail), "chrooted in its jail");
        let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
        let own_ns = ns(&running.pid().to_string());
        assert_ne!(own_ns, ns("self"), "a mount namespace of its own");
        // Its command line names no host path; the orphan sweep knows it
        // by its id and its root.
        assert_eq!(jailed_vm(running.pid(), dir.path()), Some(vm.id.clone()));
        assert_eq!(jailed_vm(std::process::id(), dir.path()), None);
        let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", running.pid())).unwrap();
        assert!(cgroup.contains(&format!("/hearth/{}", vm.id)), "{cgroup}");
        running.kill().await;
    })
    .await;
    assert!(!vm.run_dir.join(JAIL_DIR).exists(), "the jail is removed");
    let paths = isolation
        .cgroups()
        .map(|c| c.vm(&vm.id).paths())
        .unwrap_or_default();
    assert!(paths.iter().all(|p| !p.exists()), "the cgroup is removed");
}

/// Firecracker confined without a jailer: as the VM's user where that user
/// may open /dev/kvm; where only root may (as on these machines), it runs
/// as hearth and the report says why. Its cgroup either way.
#[tokio::test]
async fn an_unjailed_isolated_firecracker_runs_as_the_vms_user_where_kvm_lets_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: hypervisors get users and cgroups of their own only from root");
        return;
    }
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o711);
    std::fs::set_permissions(dir.path(), mode).unwrap();
    let isolation = Arc::new(Isolation::for_host());
    let fc = fc.with_jailer(None).isolated(Arc::clone(&isolation));
    let marker = "hearth-unjailed-guest";
    let elf = tiny_guest_elf_ending(marker, GuestEnd::HaltForever);
    let vm = description(dir.path(), write_kernel(dir.path(), "halt.elf", &elf));
    let kvm = hearth_vmm::isolation::user::kvm_group(Path::new("/dev/kvm"));
    bounded(async {
        let mut running = fc.start(&vm).await.expect("firecracker starts");
        wait_for_marker(&mut running, marker).await;
        let report = running.isolation().expect("a report").clone();
        assert!(!report.jailer);
        assert!(
            report
                .off
                .iter()
                .any(|o| o.contains("HEARTH_JAILER is not set")),
            "{report:?}"
        );
        let status = std::fs::read_to_string(format!("/proc/{}/status", running.pid())).unwrap();
        match (&kvm, report.uid) {
            (Ok(_), Some(uid)) => assert!(status.contains(&format!("Uid:\t{uid}\t")), "{status}"),
            (Err(_), None) => {
                assert!(
                    report.off.iter().any(|o| o.contains("/dev/kvm")),
                    "{report:?}"
                );
                assert!(status.contains("Uid:\t0\t"), "{status}");
            }
            other => panic!("KVM access {other:?} and the report disagree: {report:?}"),
        }
        if isolation.cgroups().is_ok() {
            let cgroup =
                std::fs::read_to_string(format!("/proc/{}/cgroup", running.pid())).unwrap();
            assert!(cgroup.contains(&format!("/hearth/{}", vm.id)), "{cgroup}");
        }
        running.kill().await;
    })
    .await;
    let paths = isolation
        .cgroups()
        .map(|c| c.vm(&vm.id).paths())
        .unwrap_or_default();
    assert!(paths.iter().all(|p| !p.exists()), "the cgroup is removed");
}

/// The agent's channel of a jailed Firecracker: its vsock socket is in the
/// jail, and the channel's socket path links to it, so the host connects
/// as to an unjailed one; stopping goes through the linked API socket.
#[tokio::test]
async fn an_accepted_connect_reaches_a_jailed_firecrackers_guest_through_the_linked_socket() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    let Some(jailer) = std::env::var_os(JAILER_ENV).filter(|v| !v.is_empty()) else {
        eprintln!("skipped: HEARTH_JAILER is not set (path to Firecracker's jailer); the jailer test needs it");
        return;
    };
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the jailer needs root");
        return;
    }
    let fc = fc
        .with_jailer(Some(jailer.into()))
        .isolated(Arc::new(Isolation::for_host()));
    bounded(async {
        let (mut running, uds) =
            boot_vsock_guest(&fc, dir.path(), vsock_guest::Reply::Accept).await;
        assert!(running.isolation().is_some_and(|r| r.jailer));
        assert!(std::fs::symlink_metadata(&uds)
            .unwrap()
            .file_type()
            .is_symlink());
        let mut stream = connect_blocking(&uds, AGENT_VSOCK_PORT).await.unwrap();
        let greeting = tokio::task::spawn_blocking(move || {
            let mut greeting = vec![0u8; vsock_guest::GREETING.len()];
            stream.read_exact(&mut greeting).unwrap();
            stream.write_all(b"ping").unwrap();
            (greeting, stream)
        });
        let (greeting, _stream) = greeting.await.unwrap();
        assert_eq!(greeting, vsock_guest::GREETING);
        wait_for_marker(&mut running, "vsock-guest: got ping").await;
        let pid = running.pid();
        running.stop(Duration::from_millis(200)).await;
        assert!(!is_alive(pid), "firecracker left running");
    })
    .await;
}

/// A network namespace of the test's own, removed on drop.
struct TestNamespace(String);

impl TestNamespace {
    fn new() -> TestNamespace {
        let name = format!("fcn{:x}", std::process::id() % 0xf_ffff);
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        TestNamespace(name)
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }

    /// `ip -n NS ARGS`' output.
    fn ip(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .expect("ip runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// TAP `tap0` made inside, as hearth-net makes one: its descriptor.
    fn tap(&self) -> std::os::fd::OwnedFd {
        let path = self.path();
        let made = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(path).unwrap();
            // SAFETY: setns(2) on an open namespace file; it moves only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0);
            let tun = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap();
            // SAFETY: ifreq is plain old data; TUNSETIFF reads and writes
            // this one, alive for the call, on the open descriptor.
            let rc = unsafe {
                let mut request: libc::ifreq = std::mem::zeroed();
                for (slot, b) in request.ifr_name.iter_mut().zip(b"tap0") {
                    *slot = *b as libc::c_char;
                }
                request.ifr_ifru.ifru_flags =
                    (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
                libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut request)
            };
            assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
            std::os::fd::OwnedFd::from(tun)
        });
        let tap = made.join().expect("the TAP");
        self.ip(&["link", "set", "tap0", "up"]);
        tap
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// A VM given a NIC: Firecracker runs in the TAP's namespace (its own
/// network namespace is that one, not the host's), opens the TAP by name
/// (`GET /vm/config` lists it, and the TAP has a carrier, which only an
/// attached process gives it), jailed too when `HEARTH_JAILER` is set.
#[tokio::test]
async fn a_nic_s_firecracker_runs_in_its_namespace_and_opens_its_tap_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fc) = firecracker(&dir.path().join("cache")) else {
        return;
    };
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: a NIC needs root and /dev/net/tun");
        return;
    }
    let jailer = std::env::var_os(JAILER_ENV).filter(|v| !v.is_empty());
    let mut backends = vec![("plain", fc.clone())];
    match jailer {
        Some(jailer) => backends.push((
            "jailed",
            fc.with_jailer(Some(jailer.into()))
                .isolated(Arc::new(Isolation::for_host())),
        )),
        None => eprintln!("HEARTH_JAILER is not set: the jailed half is skipped"),
    }
    for (how, fc) in backends {
        let ns = TestNamespace::new();
        let marker = "hearth-nic-guest";
        let elf = tiny_guest_elf_ending(marker, GuestEnd::HaltForever);
        let mut vm = description(dir.path(), write_kernel(dir.path(), "halt.elf", &elf));
        vm.run_dir = dir.path().join(vm.id.as_str());
        let nic = hearth_vmm::Nic {
            tap: ns.tap(),
            mac: "02:68:74:00:00:02".into(),
            tap_name: "tap0".into(),
            namespace: Some(ns.path()),
        };
        bounded(async {
            let mut running = fc
                .start_with_nic(&vm, Box::new(|_| {}), nic)
                .await
                .expect("firecracker starts the guest with its NIC");
            wait_for_marker(&mut running, marker).await;
            let inode = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
            let theirs = inode(PathBuf::from(format!("/proc/{}/ns/net", running.pid())));
            assert_eq!(theirs, inode(ns.path()), "{how}: in the NIC's namespace");
            assert_ne!(theirs, inode(PathBuf::from("/proc/self/ns/net")), "{how}");
            let link = ns.ip(&["link", "show", "tap0"]);
            assert!(
                !link.contains("NO-CARRIER"),
                "{how}: tap0 is not attached: {link}"
            );
            let socket = match how {
                "jailed" => Jail::of(&vm, fc.binary()).root.join("firecracker.sock"),
                _ => vm.run_dir.join("firecracker.sock"),
            };
            let api = ApiClient::new(socket, Duration::from_secs(2));
            let config: serde_json::Value =
                serde_json::from_slice(&api.get("/vm/config").await.unwrap()).unwrap();
            let nics = &config["network-interfaces"];
            assert_eq!(nics[0]["host_dev_name"], "tap0", "{how}: {config}");
            assert_eq!(nics[0]["guest_mac"], "02:68:74:00:00:02", "{how}: {config}");
            running.stop(Duration::from_millis(200)).await;
        })
        .await;
        drop(ns);
        assert!(
            processes_using(dir.path()).is_empty(),
            "{how}: firecracker left running"
        );
    }
}
