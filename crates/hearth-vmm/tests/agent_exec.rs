//! The guest agent for real: a static `hearth-agent` in a busybox guest
//! under QEMU connects over its virtio-serial channel, shakes hands and runs
//! commands for the host; output, exit codes and start failures come back.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hearth_agent_proto::{
    decode_data, read_frame, write_frame, GuestMessage, HostMessage, Stream, PROTOCOL,
};
use hearth_control::prepare::{self, VmFiles};
use hearth_guestkit::datadir::DataDir;
use hearth_types::{VmDescription, VmId};
use hearth_vmm::qemu::Qemu;
use hearth_vmm::{Hypervisor, RunningVm};

const PORT: &str = "hearth.agent";
const STATIC_LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.a";
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Debian's static busybox, which the minimal image is made of too.
const BUSYBOX: &str = "/bin/busybox";

/// PID 1 of the test image: mount, report, run the agent, power off when it
/// ends (the host hanging up ends it).
const INIT: &str = r#"#!/bin/sh
trap 'sync; reboot -f' EXIT
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
grep -q " /proc " /proc/mounts 2>/dev/null || mount -t proc proc /proc
grep -q " /sys " /proc/mounts || mount -t sysfs sysfs /sys
grep -q " /dev " /proc/mounts || mount -t devtmpfs devtmpfs /dev
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
echo "hearth: ready"
/bin/hearth-agent --port hearth.agent
echo "hearth: agent exited with $?"
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the agent statically for baseline x86-64 in a target directory
/// of its own; `None` when this host has no static glibc to link.
fn build_agent() -> Option<PathBuf> {
    if !Path::new(STATIC_LIBC).exists() {
        println!("skipped: no static glibc ({STATIC_LIBC}) to link hearth-agent with");
        return None;
    }
    let target_dir = workspace().join("target/agent-build");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--locked", "-p", "hearth-agent"])
        .args(["--target", TARGET])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(workspace())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the static agent failed");
    Some(target_dir.join(TARGET).join("release/hearth-agent"))
}

/// A busybox tree like the minimal image's, with the agent and our init,
/// made into an ext4 root.
fn agent_image(agent: &Path, dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    for sub in ["bin", "sbin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    std::fs::copy(BUSYBOX, tree.join("bin/busybox")).expect("the host has busybox");
    link_applets(&tree);
    std::fs::copy(agent, tree.join("bin/hearth-agent")).expect("the agent is copied");
    write_executable(&tree.join("sbin/init"), INIT);
    let image = dir.join("rootfs.ext4");
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "hearth-root", "-d"])
        .args([tree.as_os_str(), image.as_os_str()])
        .arg("64M")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mkfs.ext4 runs");
    assert!(status.success(), "mkfs.ext4 failed");
    image
}

/// Every busybox applet as a relative link in /bin (init is ours).
fn link_applets(tree: &Path) {
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    for applet in list
        .lines()
        .filter(|a| !matches!(*a, "busybox" | "init" | ""))
    {
        let _ = std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet));
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A VM description booting `image` with the agent channel in its run dir.
fn describe(data: &DataDir, image: &Path) -> (VmDescription, VmFiles) {
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(data, &mut |_| {})
        .expect("the kernel is fetched");
    let image = image.to_str().expect("a UTF-8 path");
    let assets = prepare::resolve_assets(data, None, image).expect("boot assets");
    let id = VmId::generate();
    let files = VmFiles::for_run(data, &id);
    files.create(data).expect("the run dir and layer are made");
    let cmdline = prepare::cmdline(&[]).expect("a command line");
    // Every described VM has the agent channel already.
    let vm = files.describe(&id, &assets, 1, 256, cmdline);
    assert_eq!(vm.channels.len(), 1);
    assert_eq!(vm.channels[0].name, PORT);
    (vm, files)
}

/// Connects to QEMU's end of the channel, retrying until it listens.
fn connect(socket: &Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return s,
            Err(e) if Instant::now() > deadline => panic!("{}: {e}", socket.display()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn recv(s: &mut UnixStream) -> GuestMessage {
    read_frame(s)
        .expect("a frame from the agent")
        .expect("the agent hung up")
}

fn exec(s: &mut UnixStream, id: u64, argv: &[&str]) {
    let argv = argv.iter().map(|a| a.to_string()).collect();
    let msg = HostMessage::Exec {
        id,
        argv,
        env: Vec::new(),
        timeout_ms: Some(10_000),
    };
    write_frame(s, &msg).expect("the request is sent");
}

/// Stdout, stderr and the final message of one exec.
fn outcome(s: &mut UnixStream) -> (String, String, GuestMessage) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match recv(s) {
            GuestMessage::ExecOutput { stream, data, .. } => {
                let buf = if stream == Stream::Stdout {
                    &mut out
                } else {
                    &mut err
                };
                buf.extend(decode_data(&data).expect("base64 output"));
            }
            end => {
                let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
                return (text(out), text(err), end);
            }
        }
    }
}

/// The conversation with the agent; blocking, so run off the runtime.
fn converse(socket: &Path) {
    let mut s = connect(socket);
    s.set_read_timeout(Some(Duration::from_secs(45))).unwrap();
    let hello = recv(&mut s);
    assert!(
        matches!(&hello, GuestMessage::Hello { protocol, boot_id, .. } if *protocol == PROTOCOL && !boot_id.is_empty()),
        "{hello:?}"
    );
    write_frame(&mut s, &HostMessage::Welcome { protocol: PROTOCOL }).unwrap();

    let sent = Instant::now();
    exec(&mut s, 1, &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let (out, err, end) = outcome(&mut s);
    println!("exec round trip (sh -c): {:?}", sent.elapsed());
    assert_eq!((out.trim_end(), err.trim_end()), ("out", "err"));
    let exit = GuestMessage::ExecExit {
        id: 1,
        code: Some(3),
        signal: None,
        timed_out: false,
    };
    assert_eq!(end, exit);

    let sent = Instant::now();
    exec(&mut s, 2, &["true"]);
    let (_, _, end) = outcome(&mut s);
    println!("exec round trip (true): {:?}", sent.elapsed());
    assert!(
        matches!(
            end,
            GuestMessage::ExecExit {
                id: 2,
                code: Some(0),
                ..
            }
        ),
        "{end:?}"
    );

    exec(&mut s, 3, &["/no/such/program"]);
    let (_, _, end) = outcome(&mut s);
    assert!(
        matches!(&end, GuestMessage::ExecError { id: 3, message } if message.contains("/no/such/program")),
        "{end:?}"
    );
}

fn console(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// Waits for the guest to power off after the agent ends; kills it if not.
async fn finish(vm: &mut RunningVm) -> bool {
    match tokio::time::timeout(Duration::from_secs(15), vm.wait()).await {
        Ok(_) => true,
        Err(_) => {
            vm.kill().await;
            false
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_commands_for_the_host_over_virtio_serial() {
    let Some(agent) = build_agent() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let image = agent_image(&agent, scratch.path());
    let data = DataDir::new(hearth_testkit::test_data_dir());
    let (vm, files) = describe(&data, &image);
    let socket = vm.channels[0].socket.clone();

    let booted = Instant::now();
    let mut running = Qemu::for_host(None).start(&vm).await.expect("QEMU starts");
    let talk = tokio::task::spawn_blocking(move || converse(&socket));
    let talked = tokio::time::timeout(Duration::from_secs(60), talk).await;
    println!("boot to last answer: {:?}", booted.elapsed());
    let powered_off = finish(&mut running).await;
    let log = console(&vm.console_log);
    files.remove_all();

    match talked {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => panic!("{panic}\nconsole:\n{log}"),
        Err(_) => panic!("no answer from the agent within 60 s\nconsole:\n{log}"),
    }
    assert!(log.contains("hearth-agent: connected"), "{log}");
    assert!(
        powered_off,
        "the guest did not power off after the host hung up\n{log}"
    );
}
