//! A VM NIC's policy against the real kernel, in the lab's namespaces: a
//! denied network is refused and counted, an allow list leaves every other
//! network out, the networks every VM is refused stay refused even when
//! allowed, and a rate limit slows a download by the ratio it should
//! (measured against the same download without one, in the same run).

mod common;

use std::net::Ipv4Addr;

use common::{can_run, Lab, HOST_ADDR, INTERNET_ADDR};
use hearth_net::{Ipv4Net, NicPolicy};
use hearth_types::VmId;

const OTHER_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);

fn vm(n: u32) -> VmId {
    format!("vm-{n:012}").parse().unwrap()
}

fn net(text: &str) -> Ipv4Net {
    Ipv4Net::parse(text).unwrap()
}

#[tokio::test]
async fn a_denied_network_is_refused_and_counted_and_others_still_reached() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let other_port = lab.internet_address(OTHER_ADDR);
    lab.network.host().prepare().await.unwrap();
    let policy = NicPolicy {
        deny: vec![net("203.0.113.3")],
        ..NicPolicy::default()
    };
    let nic = lab.network.attach(&vm(1), &policy).await.unwrap();
    let guest = lab.fake_guest(nic);
    assert_eq!(lab.network.refused_packets(&vm(1)).await.unwrap(), Some(0));
    let allowed = lab.ask_from(&guest, INTERNET_ADDR).unwrap();
    assert_eq!(allowed, HOST_ADDR.to_string());
    let denied = lab.ask_port(&guest, OTHER_ADDR, other_port);
    assert!(denied.is_err(), "the denied address answered: {denied:?}");
    let refused = lab.network.refused_packets(&vm(1)).await.unwrap().unwrap();
    assert!(refused >= 1, "the denial is counted: {refused}");
    assert_eq!(lab.network.refused_packets(&vm(2)).await.unwrap(), None);
    assert!(lab.network.detach(&vm(1)).await.unwrap());
}

#[tokio::test]
async fn an_allow_list_leaves_out_every_other_network_and_never_opens_a_refused_one() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    let other_port = lab.internet_address(OTHER_ADDR);
    lab.network.host().prepare().await.unwrap();
    let policy = NicPolicy {
        allow: vec![net("203.0.113.2"), net("192.168.0.0/16")],
        ..NicPolicy::default()
    };
    let nic = lab.network.attach(&vm(1), &policy).await.unwrap();
    let guest = lab.fake_guest(nic);
    assert_eq!(
        lab.ask_from(&guest, INTERNET_ADDR).unwrap(),
        HOST_ADDR.to_string()
    );
    let left_out = lab.ask_port(&guest, OTHER_ADDR, other_port);
    assert!(
        left_out.is_err(),
        "an address off the list answered: {left_out:?}"
    );
    let private = lab.ask_from(&guest, Ipv4Addr::new(192, 168, 7, 7));
    assert!(
        private.is_err(),
        "a private network was opened: {private:?}"
    );
    let refused = lab.network.refused_packets(&vm(1)).await.unwrap().unwrap();
    assert!(refused >= 2, "both refusals counted: {refused}");
    assert!(lab.network.detach(&vm(1)).await.unwrap());
}

/// 2 MB at 4 Mbit/s (500 kB/s) takes about 3 s: the kernel's byte limit
/// starts with a second's worth of credit, then holds the rate. Unlimited,
/// through the same namespaces, it takes a few milliseconds. The ratio is
/// what is checked, and the rate after the first second's credit, never a
/// time: a loaded machine slows both.
#[tokio::test]
async fn a_rate_limit_slows_a_download_against_the_same_one_unlimited() {
    if !can_run() {
        return;
    }
    const BYTES: usize = 2_000_000;
    let lab = Lab::new();
    let port = lab.bulk_server(BYTES);
    lab.network.host().prepare().await.unwrap();
    let free = lab
        .network
        .attach(&vm(1), &NicPolicy::default())
        .await
        .unwrap();
    let limited_policy = NicPolicy {
        bandwidth_kbit: Some(4000),
        ..NicPolicy::default()
    };
    let limited = lab.network.attach(&vm(2), &limited_policy).await.unwrap();
    let (free_guest, limited_guest) = (lab.fake_guest(free), lab.fake_guest(limited));
    let (got, free_time) = lab.download(&free_guest, port).unwrap();
    assert_eq!(got, BYTES);
    let (got, limited_time) = lab.download(&limited_guest, port).unwrap();
    assert_eq!(got, BYTES, "a limited download still completes");
    let ratio = limited_time.as_secs_f64() / free_time.as_secs_f64();
    let after_credit = (BYTES - 500_000) as f64 * 8.0 / 1000.0;
    let rate_kbit = after_credit / limited_time.as_secs_f64();
    println!(
        "unlimited {free_time:?}, limited {limited_time:?} \
         ({rate_kbit:.0} kbit/s after the first second's credit), ratio {ratio:.1}"
    );
    assert!(ratio > 5.0, "the limit slowed the download {ratio:.1}x");
    assert!(
        rate_kbit < 4000.0 * 1.25,
        "the limited rate {rate_kbit:.0} kbit/s is near 4000"
    );
    assert!(lab.network.detach(&vm(1)).await.unwrap());
    assert!(lab.network.detach(&vm(2)).await.unwrap());
}

#[tokio::test]
async fn the_guests_dns_over_tcp_reaches_the_hosts_resolver_whatever_server_it_names() {
    if !can_run() {
        return;
    }
    let lab = Lab::new();
    lab.network.host().prepare().await.unwrap();
    let nic = lab
        .network
        .attach(&vm(5), &NicPolicy::default())
        .await
        .unwrap();
    let slot = nic.slot;
    let guest = lab.fake_guest(nic);
    let listeners = lab.network.host().guest_listeners(slot).await.unwrap();
    let dns_tcp = listeners.dns_tcp;
    dns_tcp.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        for stream in dns_tcp.incoming().take(2) {
            let _ = stream.unwrap().write_all(b"resolver");
        }
    });
    let gateway = lab.ask_port(&guest, hearth_net::GUEST_GATEWAY, hearth_net::DNS_PORT);
    assert_eq!(gateway.unwrap(), "resolver");
    let elsewhere = lab.ask_port(&guest, Ipv4Addr::new(198, 51, 100, 53), 53);
    assert_eq!(
        elsewhere.unwrap(),
        "resolver",
        "another server's TCP 53 is redirected"
    );
    assert!(lab.network.detach(&vm(5)).await.unwrap());
}
