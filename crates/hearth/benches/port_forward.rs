//! A forwarded port's throughput against `hearth vm cp` of the same bytes,
//! on one real VM (`minimal`, QEMU, TCG here). Both go through `hearth
//! serve` and the VM's one agent channel: `vm cp ID:/path` as the agent's
//! file transfer (64 KiB chunks, checksummed), the port as a TCP stream
//! (busybox httpd in the guest, `hearth vm port-forward` on the host, an
//! HTTP GET here). Runs alternate so the machine's noise hits both alike.
//! Prints the medians, the throughputs and their ratio.
//!
//! `cargo bench -p hearth --bench port_forward` (RUNS, default 5; MIB,
//! default 32).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::serve::Host;

fn main() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let runs = env_number("RUNS", 5);
    let mib = env_number("MIB", 32);
    let bytes = mib << 20;
    let mut host = Host::new(&["--max-file-bytes", &(bytes + 1).to_string()]);
    host.start();
    let id = host.create(&["--wait", "ready", "--memory", "512"]);
    let setup = format!(
        "mkdir -p /tmp/www && dd if=/dev/urandom of=/tmp/www/big bs=1048576 count={mib} 2>/dev/null \
         && httpd -p 127.0.0.1:8080 -h /tmp/www"
    );
    let out = host.vm_cli(&["exec", &id, "--timeout", "600", "--", "sh", "-c", &setup]);
    assert!(out.status.success(), "{}", common::text(&out));

    let (mut forward, ports) = host.port_forward(&id, &[":8080"]);
    let port = ports[0];

    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("big");
    let (mut cp, mut port_times) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let t = Instant::now();
        let out = host.vm_cli(&["cp", &format!("{id}:/tmp/www/big"), local.to_str().unwrap()]);
        assert!(out.status.success(), "{}", common::text(&out));
        cp.push(t.elapsed());
        assert_eq!(std::fs::metadata(&local).unwrap().len(), bytes as u64);

        let t = Instant::now();
        let got = http_get_len(port, "/big");
        port_times.push(t.elapsed());
        assert!(got >= bytes, "{got} bytes through the port");
        eprintln!(
            "run {}: vm cp {:.2} s, port {:.2} s",
            i + 1,
            cp[i].as_secs_f64(),
            port_times[i].as_secs_f64()
        );
    }
    let _ = forward.kill();
    let _ = forward.wait();
    let (c, p) = (median(&mut cp), median(&mut port_times));
    let mbps = |d: Duration| mib as f64 / d.as_secs_f64();
    println!(
        "{mib} MiB out of the VM, median of {runs}: vm cp {:.2} s ({:.1} MiB/s), forwarded port {:.2} s ({:.1} MiB/s), port/cp throughput {:.2}",
        c.as_secs_f64(),
        mbps(c),
        p.as_secs_f64(),
        mbps(p),
        c.as_secs_f64() / p.as_secs_f64()
    );
    host.vm_ok(&["rm", &id]);
}

/// Bytes read for `GET path` (headers included), HTTP/1.0.
fn http_get_len(port: u16, path: &str) -> usize {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match c.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) => panic!("reading the forwarded port: {e}"),
        }
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
