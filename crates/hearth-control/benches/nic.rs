//! A VM's NIC against two plain namespaces: throughput and latency from a
//! real QEMU VM (TCG here) with `network: nat` to a server in an
//! "internet" namespace, and the same from the namespace the VM networks
//! hang off to the same server (one veth hop, no VM, no NAT), with the
//! same client tools (busybox `nc` and `ping`, the guest's and the
//! host's). Namespaces made here and removed after; nothing leaves them.
//!
//! Throughput is timed by the server: from the request to the client's
//! close after the last byte. Latency is `ping`'s average round trip.
//! Runs alternate; medians and their ratios.
//!
//! `cargo bench -p hearth-control --bench nic` (root; RUNS, default 3;
//! MIB, the download's size, default 16).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_control::controller::{Controller, ControllerConfig, Scope};
use hearth_guestkit::DataDir;
use hearth_store::SqliteStore;
use hearth_testkit::netlab::NamespacePair;
use hearth_types::api::{CreateVm, ExecRequest, NetworkMode};
use hearth_types::{VmId, VmState};

const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

fn main() {
    if !can_run() {
        return;
    }
    let shared = DataDir::new(hearth_testkit::test_data_dir());
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(&shared, &mut |_| {}).expect("kernel");
    if let Some(agent) = hearth_testkit::static_agent() {
        std::env::set_var("HEARTH_AGENT", agent);
    }
    let runs = env_number("RUNS", 3);
    let mib = env_number("MIB", 16);
    let lab = Lab::new();
    let (port, timings) = serve(&lab.pair.internet, mib << 20);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = hearth_testkit::private_data_dir();
        let ctl = controller(DataDir::new(dir.path()), &lab).await;
        let id = networked_vm(&ctl).await;
        let fetch = format!("printf 'GET /\\r\\n\\r\\n' | busybox nc {SERVER} {port} > /dev/null");
        let ping = format!("busybox ping -q -c 20 -i 0.2 {SERVER}");
        let (mut vm_secs, mut ns_secs, mut vm_rtt, mut ns_rtt) = (vec![], vec![], vec![], vec![]);
        for run in 1..=runs {
            guest_sh(&ctl, &id, &fetch).await;
            vm_secs.push(timings.recv().expect("the server's timing"));
            host_sh(&lab.pair.host, &fetch);
            ns_secs.push(timings.recv().expect("the server's timing"));
            vm_rtt.push(average_rtt(&guest_sh(&ctl, &id, &ping).await));
            ns_rtt.push(average_rtt(&host_sh(&lab.pair.host, &ping)));
            eprintln!(
                "run {run}: {mib} MiB in {:.3} s (VM) vs {:.3} s (namespace); rtt {:.3} ms vs {:.3} ms",
                vm_secs[run - 1],
                ns_secs[run - 1],
                vm_rtt[run - 1],
                ns_rtt[run - 1]
            );
        }
        let (vs, ns) = (median(&mut vm_secs), median(&mut ns_secs));
        let (vr, nr) = (median(&mut vm_rtt), median(&mut ns_rtt));
        let mbit = |secs: f64| (mib as f64) * 8.0 * 1.048_576 / secs;
        println!(
            "throughput: VM {:.1} Mbit/s, namespaces {:.1} Mbit/s: the VM's is {:.3}x theirs",
            mbit(vs),
            mbit(ns),
            ns / vs
        );
        println!(
            "latency: VM {vr:.3} ms, namespaces {nr:.3} ms: the VM's is {:.1}x theirs (medians of {runs})",
            vr / nr
        );
        ctl.destroy(&admin(), &id).await.expect("destroy");
        while ctl.vm(&admin(), &id).await.expect("vm").state != VmState::Destroyed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

fn can_run() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ready = root && hearth_net::nft_binary().is_some() && busybox().is_some();
    if !ready {
        println!("skipped: the NIC benchmark needs root, nft and a static busybox");
    }
    ready
}

fn busybox() -> Option<&'static str> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bench's namespaces (`hearth_testkit::netlab`: `host`, where the VM
/// networks hang off, and `internet`), with the prefix of its VM networks.
struct Lab {
    prefix: String,
    pair: NamespacePair,
}

impl Lab {
    fn new() -> Lab {
        let prefix = format!("b{:x}", std::process::id() % 0xf_ffff);
        let pair = NamespacePair::new(&prefix);
        Lab { prefix, pair }
    }
}

/// A server in `ns` that answers each request with `bytes` bytes and
/// sends, per connection, the seconds from the request to the client's
/// close; its port.
fn serve(ns: &str, bytes: usize) -> (u16, mpsc::Receiver<f64>) {
    let path = format!("/run/netns/{ns}");
    let (port_tx, port_rx) = mpsc::channel();
    let (timing_tx, timing_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("the namespace");
        let fd = std::os::fd::OwnedFd::from(file);
        hearth_net::netns::enter(&fd).expect("setns");
        let listener = TcpListener::bind((SERVER, 0)).expect("bind");
        port_tx.send(listener.local_addr().unwrap().port()).unwrap();
        for stream in listener.incoming().flatten() {
            if let Ok(secs) = answer(stream, bytes) {
                let _ = timing_tx.send(secs);
            }
        }
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the server");
    (port, timing_rx)
}

fn answer(mut stream: TcpStream, bytes: usize) -> std::io::Result<f64> {
    let mut request = Vec::new();
    let mut buf = [0u8; 64 << 10];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let start = Instant::now();
    let chunk = vec![b'x'; 64 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n])?;
        left -= n;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    while stream.read(&mut buf)? > 0 {}
    Ok(start.elapsed().as_secs_f64())
}

async fn controller(data: DataDir, lab: &Lab) -> Arc<Controller> {
    let store = SqliteStore::open(&data.store_file()).expect("store");
    let mut config = ControllerConfig::new(data);
    config.tick = Duration::from_millis(100);
    config.readiness_timeout = Duration::from_secs(600);
    config.network.prefix = lab.prefix.parse().expect("a prefix");
    config.network.host_namespace = Some(lab.pair.host.clone());
    let ctl = Controller::new(Arc::new(store), config);
    ctl.start().await;
    ctl
}

fn admin() -> Scope {
    Scope {
        tenant: "bench".parse().expect("tenant"),
        admin: true,
    }
}

async fn networked_vm(ctl: &Arc<Controller>) -> VmId {
    let req = CreateVm {
        image: "minimal".to_owned(),
        network: Some(NetworkMode::Nat),
        readiness_timeout_secs: Some(600),
        ..CreateVm::default()
    };
    let vm = ctl.create_vm(&admin(), req).await.expect("create");
    loop {
        let now = ctl.vm(&admin(), &vm.id).await.expect("vm");
        match now.state {
            VmState::Ready => return vm.id,
            s if s.is_active() => tokio::time::sleep(Duration::from_millis(50)).await,
            s => panic!("the VM ended {s}: {:?}", now.failure),
        }
    }
}

/// `sh -c SCRIPT` in the guest; its output, which must say it succeeded.
async fn guest_sh(ctl: &Controller, id: &VmId, script: &str) -> String {
    let req = ExecRequest {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        timeout_secs: Some(600),
        env: vec![],
    };
    let out = ctl.exec(&admin(), id, req).await.expect("exec");
    assert_eq!(out.exit_code, Some(0), "{script} in the VM: {}", out.stderr);
    out.stdout
}

/// The same in one of the lab's namespaces, with the host's busybox.
fn host_sh(ns: &str, script: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The average of busybox ping's `round-trip min/avg/max = a/b/c ms`.
fn average_rtt(said: &str) -> f64 {
    said.lines()
        .find_map(|l| l.split(" = ").nth(1))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no round trip in {said:?}"))
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
