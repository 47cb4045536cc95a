//! A shared template against a plain snapshot of the same image, in
//! host memory and restore time, with the controller of `hearth serve`, a
//! real SQLite store and real QEMU VMs (TCG here):
//!
//! - shared: a template (`image`), whose RAM is one file every restored
//!   VM maps copy-on-write;
//! - plain: a snapshot of a running VM of the image (`vm`), whose RAM is
//!   in its state file and read into each restored VM's own memory;
//!
//! each round takes a fresh pair (a restore's agent wakes in whatever
//! state its snapshot caught it in, and whether it missed the old
//! channel's hang-up, which costs it a 2 s hello window, is a property of
//! the snapshot: one pair would measure that), restores N VMs from one,
//! then from the other (alternating which goes first), timing each create
//! to `ready` and to its state loaded (the restore's event), then,
//! with all N ready and settled, sums the Pss and Rss of their QEMU
//! processes (`/proc/PID/smaps_rollup`: Pss splits a page shared by k
//! processes k ways, so the sum is what the N cost the host together).
//! Medians over the rounds and their ratios.
//!
//! `cargo bench -p hearth-control --bench shared_memory` (IMAGE, default
//! `minimal`; N, default 3; RUNS, default 3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_control::controller::Controller;
use hearth_guestkit::DataDir;
use hearth_types::snapshot::CreateSnapshot;
use hearth_types::{SnapshotName, VmId, VmState};

/// How long the N restored VMs idle before their memory is read.
const SETTLE: Duration = Duration::from_secs(3);

mod common;

use common::{admin, controller, median, request, wait_gone, wait_ready};

fn main() {
    let shared = DataDir::new(hearth_testkit::test_data_dir());
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(&shared, &mut |_| {}).expect("kernel");
    if let Some(agent) = hearth_testkit::static_agent() {
        std::env::set_var("HEARTH_AGENT", agent);
    }
    let image = std::env::var("IMAGE").unwrap_or_else(|_| "minimal".into());
    let number = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (n, runs) = (number("N", 3), number("RUNS", 3));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = hearth_testkit::private_data_dir();
        let ctl = controller(DataDir::new(dir.path())).await;
        compare(&ctl, &image, n, runs).await;
    });
}

/// One round's numbers for N VMs restored from one snapshot.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Median seconds from create to `ready`.
    ready_s: f64,
    /// Median seconds from create to the state loaded and the guest run.
    load_s: f64,
    /// Sums over the N QEMU processes, MiB.
    pss_mib: f64,
    rss_mib: f64,
}

async fn compare(ctl: &Arc<Controller>, image: &str, n: usize, runs: usize) {
    let (mut s, mut p) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (shared, plain) = snapshots(ctl, image).await;
        if i % 2 == 0 {
            s.push(round(ctl, image, &shared, n).await);
            p.push(round(ctl, image, &plain, n).await);
        } else {
            p.push(round(ctl, image, &plain, n).await);
            s.push(round(ctl, image, &shared, n).await);
        }
        eprintln!("run {}: shared {:?}, plain {:?}", i + 1, s[i], p[i]);
        for name in [shared, plain] {
            ctl.remove_snapshot(&admin(), &name).await.expect("rm");
        }
    }
    let med =
        |rs: &[Round], f: fn(&Round) -> f64| median(&mut rs.iter().map(f).collect::<Vec<_>>());
    let (sp, pp) = (med(&s, |r| r.pss_mib), med(&p, |r| r.pss_mib));
    let (sr, pr) = (med(&s, |r| r.rss_mib), med(&p, |r| r.rss_mib));
    let (st, pt) = (med(&s, |r| r.ready_s), med(&p, |r| r.ready_s));
    let (sl, pl) = (med(&s, |r| r.load_s), med(&p, |r| r.load_s));
    println!(
        "{image}, {n} VMs: Pss sum shared {sp:.0} MiB, plain {pp:.0} MiB ({:.2}x of plain); \
         Rss sum shared {sr:.0} MiB, plain {pr:.0} MiB; restore to ready shared {st:.3} s, \
         plain {pt:.3} s ({:.2}x of plain); to the state loaded shared {sl:.3} s, \
         plain {pl:.3} s ({:.2}x of plain) (medians of {runs})",
        sp / pp,
        st / pt,
        sl / pl
    );
}

/// A shared template of `image`, and a plain snapshot of a ready VM of it.
async fn snapshots(ctl: &Arc<Controller>, image: &str) -> (SnapshotName, SnapshotName) {
    let name = |kind: &str| -> SnapshotName { format!("bench-{kind}").parse().expect("name") };
    let take = |name: SnapshotName, vm: Option<VmId>| CreateSnapshot {
        name,
        vm,
        image: None,
    };
    let mut template = take(name("shared"), None);
    template.image = Some(image.to_owned());
    let snap = ctl
        .create_snapshot(&admin(), template)
        .await
        .expect("template");
    eprintln!("shared template: {} MiB on disk", snap.disk_bytes >> 20);
    let source = ctl
        .create_vm(&admin(), request(image, None, 0))
        .await
        .expect("source");
    wait_ready(ctl, &source.id).await;
    let req = take(name("plain"), Some(source.id.clone()));
    let snap = ctl.create_snapshot(&admin(), req).await.expect("plain");
    eprintln!("plain snapshot: {} MiB on disk", snap.disk_bytes >> 20);
    ctl.destroy(&admin(), &source.id).await.expect("destroy");
    wait_gone(ctl, &source.id).await;
    (name("shared"), name("plain"))
}

async fn round(ctl: &Arc<Controller>, image: &str, snap: &SnapshotName, n: usize) -> Round {
    let (mut ids, mut secs, mut loads) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let start = Instant::now();
        let vm = ctl
            .create_vm(&admin(), request(image, Some(snap), i))
            .await
            .expect("restore");
        secs.push(
            wait_ready(ctl, &vm.id)
                .await
                .duration_since(start)
                .as_secs_f64(),
        );
        loads.push(to_loaded_s(ctl, &vm.id).await);
        ids.push(vm.id);
    }
    tokio::time::sleep(SETTLE).await;
    let (mut pss, mut rss) = (0, 0);
    for id in &ids {
        let (p, r) = rollup_kb(qemu_of(id));
        pss += p;
        rss += r;
    }
    for id in &ids {
        ctl.destroy(&admin(), id).await.expect("destroy");
    }
    for id in &ids {
        wait_gone(ctl, id).await;
    }
    Round {
        ready_s: median(&mut secs),
        load_s: median(&mut loads),
        pss_mib: pss as f64 / 1024.0,
        rss_mib: rss as f64 / 1024.0,
    }
}

/// Seconds from `requested` to the event `restored from snapshot ...`,
/// which the restore adds once the new QEMU has loaded the state and runs
/// the guest.
async fn to_loaded_s(ctl: &Controller, id: &VmId) -> f64 {
    let events = ctl.events(&admin(), id).await.expect("events");
    let at = |found: &dyn Fn(&hearth_types::api::VmEvent) -> bool| {
        events
            .iter()
            .find(|e| found(e))
            .map(|e| e.at.as_millis())
            .expect("the VM's events")
    };
    let requested = at(&|e| e.state == VmState::Requested);
    let loaded = at(&|e| e.message.starts_with("restored from snapshot"));
    (loaded - requested) as f64 / 1000.0
}

/// The pid of the QEMU whose `-name` is `id`.
fn qemu_of(id: &VmId) -> u32 {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let Ok(line) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let words: Vec<&[u8]> = line.split(|b| *b == 0).collect();
            words
                .first()
                .is_some_and(|w| w.ends_with(b"qemu-system-x86_64"))
                && words
                    .windows(2)
                    .any(|w| w[0] == b"-name" && w[1] == id.as_str().as_bytes())
        })
        .unwrap_or_else(|| panic!("no QEMU named {id}"))
}

/// Pss and Rss of a process, kB.
fn rollup_kb(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}
