//! Time to set up and tear down one VM's network, with 1, 100 and 1000
//! VMs' worth of networks already present: run with
//! `cargo bench -p hearth-net --bench setup` (root; in namespaces of its
//! own, like the tests). Prints one line per size; docs/benchmarks.md
//! keeps the figures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{can_run, Lab};
use hearth_net::NicPolicy;
use hearth_types::VmId;

const SAMPLES: u32 = 20;

fn vm(n: u32) -> VmId {
    format!("vm-{n:012}").parse().unwrap()
}

#[tokio::main]
async fn main() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.network.host().prepare().await.unwrap();
    let mut present = Vec::new();
    for size in [1u32, 100, 1000] {
        while present.len() + 1 < size as usize {
            let n = present.len() as u32;
            present.push(
                lab.network
                    .attach(&vm(100_000 + n), &NicPolicy::default())
                    .await
                    .unwrap(),
            );
        }
        let (setup, teardown) = sample(&lab).await;
        println!(
            "{size:>5} VMs' networks present: setup {:.1} ms, teardown {:.1} ms (mean of {SAMPLES})",
            ms(setup),
            ms(teardown)
        );
    }
    for (n, nic) in present.into_iter().enumerate() {
        drop(nic);
        lab.network.detach(&vm(100_000 + n as u32)).await.unwrap();
    }
}

async fn sample(lab: &Lab) -> (Duration, Duration) {
    let (mut setup, mut teardown) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let nic = lab
            .network
            .attach(&vm(1), &NicPolicy::default())
            .await
            .unwrap();
        setup += started.elapsed();
        drop(nic);
        let started = Instant::now();
        lab.network.detach(&vm(1)).await.unwrap();
        teardown += started.elapsed();
    }
    (setup / SAMPLES, teardown / SAMPLES)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
