//! What the controller of `hearth serve` costs, measured in-process with a
//! real SQLite store and real VMs (QEMU; TCG where KVM cannot run guests):
//!
//! - overhead: from `create_vm` to the hypervisor process started (the
//!   `requested` and `booting` events' timestamps), median;
//! - create-to-ready against a foreground `vm run` of the same image, both
//!   timed from the call to the guest's readiness line, runs alternating;
//! - sustained creates per second, and controller memory per running VM.
//!
//! `cargo bench -p hearth-control --bench controller` (RUNS, default 5;
//! VMS, default 6 VMs for the rate and memory part).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_control::controller::{Controller, ControllerConfig, Scope};
use hearth_control::{run_foreground, RunRequest};
use hearth_guestkit::image::ImageName;
use hearth_guestkit::DataDir;
use hearth_store::SqliteStore;
use hearth_types::api::CreateVm;
use hearth_types::{Timestamp, VmState};
use hearth_vmm::qemu::Qemu;

fn main() {
    let shared = DataDir::new(hearth_testkit::test_data_dir());
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(&shared, &mut |_| {}).expect("kernel");
    hearth_guestkit::image::ensure_image(
        &shared,
        ImageName::Minimal,
        false,
        shared_agent(),
        &mut |_| {},
    )
    .expect("image");
    let runs = env_or("RUNS", 5);
    let vms = env_or("VMS", 6);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = hearth_testkit::private_data_dir();
        let ctl = controller(DataDir::new(dir.path())).await;
        overhead_and_ready_ratio(&ctl, &shared, runs).await;
        rate_and_memory(&ctl, vms).await;
    });
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn controller(data: DataDir) -> Arc<Controller> {
    let store = SqliteStore::open(&data.store_file()).expect("store");
    let mut config = ControllerConfig::new(data);
    config.tick = Duration::from_millis(100);
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

async fn wait_for(ctl: &Controller, id: &hearth_types::VmId, want: VmState) -> Instant {
    loop {
        let vm = ctl.vm(&admin(), id).await.expect("vm");
        if vm.state == want {
            return Instant::now();
        }
        assert!(
            vm.state.is_active(),
            "VM {id} ended {} ({:?}) waiting for {want}",
            vm.state,
            vm.failure
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Milliseconds between the `requested` and `booting` events.
async fn spawn_overhead_ms(ctl: &Controller, id: &hearth_types::VmId) -> i64 {
    let events = ctl.events(&admin(), id).await.expect("events");
    let at = |s: VmState| {
        events
            .iter()
            .find(|e| e.state == s)
            .map(|e| e.at)
            .unwrap_or(Timestamp::from_millis(0))
    };
    at(VmState::Booting).as_millis() - at(VmState::Requested).as_millis()
}

async fn overhead_and_ready_ratio(ctl: &Arc<Controller>, shared: &DataDir, runs: usize) {
    let (mut overhead, mut api, mut fg) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let start = Instant::now();
        let vm = ctl
            .create_vm(
                &admin(),
                CreateVm {
                    command: vec!["sleep".into(), "60".into()],
                    ..Default::default()
                },
            )
            .await
            .expect("create");
        let ready = wait_for(ctl, &vm.id, VmState::Ready).await;
        api.push(ready - start);
        overhead.push(spawn_overhead_ms(ctl, &vm.id).await as f64);
        ctl.destroy(&admin(), &vm.id).await.expect("destroy");
        fg.push(foreground_to_ready(shared).await);
        eprintln!(
            "run {}: api {:.3} s, vm run {:.3} s, overhead {} ms",
            i + 1,
            api[i].as_secs_f64(),
            fg[i].as_secs_f64(),
            overhead[i]
        );
    }
    let (a, f) = (median_d(&mut api), median_d(&mut fg));
    println!(
        "controller overhead (create to hypervisor started), median of {runs}: {:.1} ms",
        median_f(&mut overhead)
    );
    println!(
        "create-to-ready: API {:.3} s, vm run {:.3} s, ratio {:.3}",
        a.as_secs_f64(),
        f.as_secs_f64(),
        a.as_secs_f64() / f.as_secs_f64()
    );
}

/// A sink that notes when the readiness line passes through it.
struct ReadyClock {
    start: Instant,
    seen: Option<Duration>,
    buf: Vec<u8>,
}

impl Write for ReadyClock {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.seen.is_none() && self.buf.windows(13).any(|w| w == b"hearth: ready") {
            self.seen = Some(self.start.elapsed());
        }
        if self.buf.len() > 1 << 16 {
            self.buf.drain(..self.buf.len() - 64);
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn foreground_to_ready(shared: &DataDir) -> Duration {
    let req = RunRequest {
        kernel: None,
        image: "minimal".into(),
        vcpus: 1,
        memory_mib: 256,
        timeout: Duration::from_secs(120),
        command: vec!["true".into()],
        initramfs: Default::default(),
        modules: None,
        network: None,
    };
    let mut clock = ReadyClock {
        start: Instant::now(),
        seen: None,
        buf: Vec::new(),
    };
    run_foreground(shared, &Qemu::for_host(None), &req, &mut clock)
        .await
        .expect("vm run");
    clock
        .seen
        .expect("the foreground guest printed its readiness line")
}

async fn rate_and_memory(ctl: &Arc<Controller>, n: usize) {
    let rss_before = rss_kib();
    let start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            ctl.create_vm(&admin(), CreateVm::default())
                .await
                .expect("create")
                .id,
        );
    }
    for id in &ids {
        wait_for(ctl, id, VmState::Booting).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "sustained creates: {n} VMs to hypervisor started in {:.2} s, {rate:.1} per second",
        start.elapsed().as_secs_f64()
    );
    for id in &ids {
        wait_for(ctl, id, VmState::Ready).await;
    }
    let per_vm = (rss_kib().saturating_sub(rss_before)) as f64 / n as f64;
    println!("controller memory per running VM: {per_vm:.0} KiB (RSS growth with {n} VMs ready)");
    for id in &ids {
        ctl.destroy(&admin(), id).await.expect("destroy");
    }
    for id in &ids {
        wait_for_gone(ctl, id).await;
    }
}

async fn wait_for_gone(ctl: &Controller, id: &hearth_types::VmId) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctl.vm(&admin(), id).await.expect("vm").state != VmState::Destroyed
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median_d(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn median_f(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The agent the shared minimal image is built with, the same one every
/// test process names (as `scripts/test` does); without static glibc to
/// build it, an image without the agent, said so.
fn shared_agent() -> hearth_guestkit::image::AgentChoice {
    use hearth_guestkit::image::AgentChoice;
    match hearth_testkit::static_agent() {
        Some(agent) => {
            if std::env::var_os("HEARTH_AGENT").is_none() {
                std::env::set_var("HEARTH_AGENT", agent);
            }
            AgentChoice::Find
        }
        None => AgentChoice::Without,
    }
}
