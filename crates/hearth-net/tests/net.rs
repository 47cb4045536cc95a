//! hearth-net against the real kernel, in namespaces the tests make: a
//! VM's network reaches the "internet" through NAT and not the host;
//! teardown leaves nothing; the reconciler removes orphans and the slots of
//! VMs that are gone.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{can_run, Lab, HOST_ADDR, INTERNET_ADDR};
use hearth_net::{NicPolicy, Orphans, Slot};
use hearth_types::VmId;

fn vm(n: u32) -> VmId {
    format!("vm-{n:012}").parse().unwrap()
}

#[tokio::test]
async fn a_vm_network_reaches_the_internet_through_nat_and_not_the_host() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.network.host().prepare().await.unwrap();
    let nic = lab
        .network
        .attach(&vm(1), &NicPolicy::default())
        .await
        .unwrap();
    assert_eq!(nic.name, format!("{}-s0", lab.prefix));
    assert_eq!(nic.guest.mac_text(), "02:68:74:00:00:02");
    let seen = lab.ask_from(&nic.name, INTERNET_ADDR).unwrap();
    assert_eq!(
        seen,
        HOST_ADDR.to_string(),
        "the internet sees the host's address"
    );
    let host_itself = lab.ask_from(&lab.host_ns, HOST_ADDR).unwrap();
    assert_eq!(
        host_itself,
        HOST_ADDR.to_string(),
        "the host's server answers the host"
    );
    let to_host = lab.ask_from(&nic.name, HOST_ADDR);
    assert!(
        to_host.is_err(),
        "a VM's namespace reached the host: {to_host:?}"
    );
    drop(nic);
    assert!(lab.network.detach(&vm(1)).await.unwrap());
}

#[tokio::test]
async fn attach_then_detach_leaves_nothing() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let links_before = lab.host_links();
    lab.network.host().prepare().await.unwrap();
    let first = lab
        .network
        .attach(&vm(1), &NicPolicy::default())
        .await
        .unwrap();
    let second = lab
        .network
        .attach(&vm(2), &NicPolicy::default())
        .await
        .unwrap();
    assert_eq!(lab.namespaces().len(), 2);
    assert!(lab.host_links().contains(&second.name));
    assert_eq!(lab.network.held().await.unwrap().len(), 2);
    drop((first, second));
    assert!(lab.network.detach(&vm(1)).await.unwrap());
    assert!(lab.network.detach(&vm(2)).await.unwrap());
    assert!(
        !lab.network.detach(&vm(2)).await.unwrap(),
        "a second detach finds nothing"
    );
    lab.network.host().unprepare().await.unwrap();
    assert_eq!(lab.namespaces(), Vec::<String>::new());
    assert_eq!(lab.host_links(), links_before);
    assert_eq!(lab.network.held().await.unwrap(), vec![]);
    assert_eq!(
        lab.network.host().host_tables().await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn the_reconciler_removes_orphans_after_their_grace_and_keeps_owned_slots() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let kept = lab
        .network
        .attach(&vm(1), &NicPolicy::default())
        .await
        .unwrap();
    // A creation that died between the kernel and the store cannot happen
    // (the claim comes first), but leftovers of a lost store or a failed
    // teardown look like this: kernel objects with no slot row.
    let orphan = Slot::new(7).unwrap();
    drop(
        lab.network
            .host()
            .create(orphan, &NicPolicy::default())
            .await
            .unwrap(),
    );
    let mut orphans = Orphans::new(Duration::from_millis(300));
    let first = lab.network.reconcile(&mut orphans, |_| true).await.unwrap();
    assert_eq!(first.waiting, vec![orphan], "an orphan waits out its grace");
    assert_eq!(lab.namespaces().len(), 2);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = lab.network.reconcile(&mut orphans, |_| true).await.unwrap();
    assert_eq!(second.removed_orphans, vec![orphan]);
    assert_eq!(lab.namespaces(), vec![kept.name.clone()]);
    let kernel = lab.network.host().kernel_slots().await.unwrap();
    assert_eq!(kernel, BTreeSet::from([kept.slot]));
}

#[tokio::test]
async fn the_reconciler_releases_the_slots_of_vms_that_are_gone() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let nic = lab
        .network
        .attach(&vm(1), &NicPolicy::default())
        .await
        .unwrap();
    drop(nic);
    let mut orphans = Orphans::new(Duration::ZERO);
    let report = lab
        .network
        .reconcile(&mut orphans, |_| false)
        .await
        .unwrap();
    assert_eq!(report.released, vec![(vm(1), Slot::new(0).unwrap())]);
    assert_eq!(lab.namespaces(), Vec::<String>::new());
    assert_eq!(lab.network.held().await.unwrap(), vec![]);
}

/// The guest's path, with a namespace standing in for the guest behind
/// the TAP: it reaches the internet through both NATs; it reaches neither
/// the host's own address, nor another VM's namespace, nor a private
/// network, and those refusals are counted for its VM.
#[tokio::test]
async fn a_guest_reaches_the_internet_but_not_the_host_other_vms_or_private_networks() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.network.host().prepare().await.unwrap();
    let nic = lab
        .network
        .attach(&vm(1), &NicPolicy::default())
        .await
        .unwrap();
    let other = lab
        .network
        .attach(&vm(2), &NicPolicy::default())
        .await
        .unwrap();
    let slot = nic.slot;
    let guest = lab.fake_guest(nic);
    let seen = lab.ask_from(&guest, INTERNET_ADDR).unwrap();
    assert_eq!(
        seen,
        HOST_ADDR.to_string(),
        "the internet sees the host's address"
    );
    assert_eq!(lab.network.host().refused_packets(slot).await.unwrap(), 0);

    let to_host = lab.ask_from(&guest, HOST_ADDR);
    assert!(to_host.is_err(), "the guest reached the host: {to_host:?}");
    let other_ns = lab.network.host().pool().namespace_address(other.slot);
    let to_other = lab.ask_from(&guest, other_ns);
    assert!(
        to_other.is_err(),
        "the guest reached another VM: {to_other:?}"
    );
    let private = lab.ask_from(&guest, Ipv4Addr::new(192, 168, 7, 7));
    assert!(
        private.is_err(),
        "the guest reached a private network: {private:?}"
    );
    let refused = lab.network.host().refused_packets(slot).await.unwrap();
    assert!(refused >= 2, "refusals counted for the VM: {refused}");
    assert_eq!(
        lab.network
            .host()
            .refused_packets(other.slot)
            .await
            .unwrap(),
        0
    );

    drop(other);
    assert!(lab.network.detach(&vm(1)).await.unwrap());
    assert!(lab.network.detach(&vm(2)).await.unwrap());
}

#[tokio::test]
async fn attach_takes_over_a_slot_whose_orphan_the_reconciler_has_not_reached() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let leftover = lab
        .network
        .host()
        .create(Slot::new(0).unwrap(), &NicPolicy::default())
        .await
        .unwrap();
    drop(leftover);
    let nic = lab
        .network
        .attach(&vm(1), &NicPolicy::default())
        .await
        .unwrap();
    assert_eq!(nic.slot, Slot::new(0).unwrap());
    assert_eq!(lab.namespaces(), vec![nic.name.clone()]);
    drop(nic);
    assert!(lab.network.detach(&vm(1)).await.unwrap());
    assert_eq!(lab.namespaces(), Vec::<String>::new());
}
