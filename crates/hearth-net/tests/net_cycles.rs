//! Many create/destroy cycles of VM networks (no VM booted) leave the
//! namespaces, the host's links, its nftables tables, the slots and this
//! process's file descriptors as they were. Its own test binary, so no
//! other test opens descriptors while they are counted.

mod common;

use std::time::Instant;

use common::{can_run, open_fds, Lab};
use hearth_net::NicPolicy;
use hearth_types::VmId;

const CYCLES: u32 = 200;

#[tokio::test]
async fn two_hundred_cycles_leave_nothing_behind() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.network.host().prepare().await.unwrap();
    // One cycle first, so lazily opened descriptors are not counted as growth.
    cycle(&lab, 0).await;
    let links = lab.host_links();
    let tables = lab.network.host().host_tables().await.unwrap();
    let fds = open_fds();
    let started = Instant::now();
    for n in 1..=CYCLES {
        cycle(&lab, n).await;
    }
    let per_cycle = started.elapsed() / CYCLES;
    println!("{CYCLES} cycles of attach + detach: {per_cycle:?} each");
    assert_eq!(lab.namespaces(), Vec::<String>::new());
    assert_eq!(lab.host_links(), links);
    assert_eq!(lab.network.host().host_tables().await.unwrap(), tables);
    assert_eq!(lab.network.held().await.unwrap(), vec![]);
    assert_eq!(open_fds(), fds, "file descriptors grew");
}

async fn cycle(lab: &Lab, n: u32) {
    let vm: VmId = format!("vm-{n:012}").parse().unwrap();
    let nic = lab
        .network
        .attach(&vm, &NicPolicy::default())
        .await
        .unwrap();
    drop(nic);
    assert!(lab.network.detach(&vm).await.unwrap());
}
