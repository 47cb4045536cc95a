//! The host's services for a guest with a NIC, served on sockets inside the
//! VM's namespace (on its gateway address): the DNS resolver the guest is
//! told to use (and that every query of its is redirected to), and the
//! egress proxy its web traffic (TCP 80 and 443) is redirected to. Both
//! apply the VM's policy through `hearth-egress`, the same code the login
//! sessions' proxy runs: the domain rules, the name resolved on the host,
//! every address checked (always-refused classes, `deny`, `allow`). The
//! proxy's own connections are made inside the VM's namespace, so they
//! leave by its veth, NAT and host rules like the guest's own traffic.
//!
//! They live in the controller's process: started after the VM's network
//! is made, stopped at its detach, and started again by the network
//! reconciler for a running VM a restarted controller adopted. What they
//! refused is counted in memory and its totals written to the store every
//! [`FLUSH_INTERVAL`] when they changed, and at stop; a start begins from
//! the stored totals, so they survive a controller restart.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hearth_egress::{
    BoxIo, Connector, DnsResponder, Egress, Intercepted, IpNet, NoRecords, Policy, Resolver,
};
use hearth_net::{NetHost, NicPolicy, Slot};
use hearth_store::{EgressRefusals, Store};
use hearth_types::{error_chain, Timestamp, VmId};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::JoinHandle;

/// How long the proxy's connection to an origin may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a VM's refusal totals are written to the store (when they
/// changed): at most this much of them is lost to a controller crash.
const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// The proxy and resolver policy of a VM's NIC policy: its domains (any,
/// when it names none), its `deny` refused, its `allow` the only networks,
/// the networks its tenant opened let through the address classes.
pub(super) fn egress_policy(nic: &NicPolicy) -> Result<Policy, String> {
    let mut policy = if nic.allow_domains.is_empty() {
        Policy::any_domain()
    } else {
        Policy::allow_list(&nic.allow_domains)
            .map_err(|e| format!("network_policy.allow_domains: {e}"))?
    };
    let net = |n: &hearth_net::Ipv4Net| IpNet::parse(&n.to_string()).map_err(|e| e.to_string());
    for n in &nic.deny {
        policy = policy.deny_network(net(n)?);
    }
    for n in &nic.allow {
        policy = policy.only_network(net(n)?);
    }
    for n in &nic.open {
        policy = policy.allow_network(net(n)?);
    }
    Ok(policy)
}

/// The services of every VM served now.
#[derive(Debug)]
pub(super) struct GuestServices {
    resolver: Arc<dyn Resolver>,
    store: Arc<dyn Store>,
    running: Mutex<HashMap<VmId, Running>>,
}

/// One VM's services: their tasks (aborted on drop) and their counts.
#[derive(Debug)]
struct Running {
    tasks: Vec<JoinHandle<()>>,
    tally: Tally,
}

impl Running {
    /// Its tasks, no longer aborted by its drop.
    fn take_tasks(mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.tasks)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a VM's services refused: DNS queries, proxied connections.
pub(super) type Refusals = EgressRefusals;

/// A VM's refusals: the stored totals its services started from, and
/// what they counted since.
#[derive(Clone, Debug)]
struct Tally {
    base: EgressRefusals,
    dns: DnsResponder,
    egress: Egress,
}

impl Tally {
    fn totals(&self) -> EgressRefusals {
        EgressRefusals {
            queries: self.base.queries + self.dns.counters().refused(),
            connections: self.base.connections + self.egress.counters().denied(),
        }
    }

    /// Writes the totals; a failure is logged (they are written again at
    /// the next flush).
    async fn write(&self, store: &dyn Store, vm: &VmId) -> EgressRefusals {
        let totals = self.totals();
        if let Err(e) = store
            .put_egress_refusals(vm, totals, Timestamp::now())
            .await
        {
            tracing::warn!(%vm, error = %error_chain(&e), "storing a VM's egress refusals");
        }
        totals
    }

    /// Writes the totals every [`FLUSH_INTERVAL`] they changed.
    async fn flush_forever(self, store: Arc<dyn Store>, vm: VmId) {
        let mut written = self.base;
        loop {
            tokio::time::sleep(FLUSH_INTERVAL).await;
            if self.totals() != written {
                written = self.write(store.as_ref(), &vm).await;
            }
        }
    }
}

impl GuestServices {
    pub(super) fn new(resolver: Arc<dyn Resolver>, store: Arc<dyn Store>) -> GuestServices {
        GuestServices {
            resolver,
            store,
            running: Mutex::default(),
        }
    }

    /// Serves VM `vm` on `slot`'s namespace (again: what ran for it
    /// before is stopped first, its counts carried on).
    pub(super) async fn start(
        &self,
        host: &NetHost,
        vm: &VmId,
        slot: Slot,
        nic: &NicPolicy,
    ) -> Result<(), String> {
        let policy = Arc::new(egress_policy(nic)?);
        let base = match self.end(vm).await {
            Some(totals) => totals,
            None => self.stored(vm).await,
        };
        // Bound once the old sockets are closed.
        let listeners = host.guest_listeners(slot).await;
        let listeners = listeners.map_err(|e| error_chain(&e))?;
        let tokio_socket = |e: io::Error| format!("serving the guest's sockets: {e}");
        let dns_socket = UdpSocket::from_std(listeners.dns).map_err(tokio_socket)?;
        let dns_tcp = TcpListener::from_std(listeners.dns_tcp).map_err(tokio_socket)?;
        let http = TcpListener::from_std(listeners.http).map_err(tokio_socket)?;
        let tls = TcpListener::from_std(listeners.tls).map_err(tokio_socket)?;
        let connector = Arc::new(InNamespace {
            host: host.clone(),
            slot,
        });
        let egress = Egress::new(self.resolver.clone(), connector, Arc::new(NoRecords));
        let dns = DnsResponder::new(self.resolver.clone());
        let tally = Tally {
            base,
            dns: dns.clone(),
            egress: egress.clone(),
        };
        let tasks = vec![
            tokio::spawn(dns.clone().serve(dns_socket, policy.clone())),
            tokio::spawn(dns.serve_tcp(dns_tcp, policy.clone())),
            tokio::spawn(intercept(
                http,
                Intercepted::Http,
                egress.clone(),
                policy.clone(),
            )),
            tokio::spawn(intercept(tls, Intercepted::Tls, egress, policy)),
            tokio::spawn(tally.clone().flush_forever(self.store.clone(), vm.clone())),
        ];
        self.lock().insert(vm.clone(), Running { tasks, tally });
        Ok(())
    }

    /// Serves VM `vm` with `nic` from now on, its counts kept: its
    /// services are stopped (their sockets closed) and served again.
    /// Connections the proxy carries now go on; new ones are checked
    /// against `nic`. Nothing when `vm` is not served.
    pub(super) async fn replace_policy(
        &self,
        host: &NetHost,
        vm: &VmId,
        slot: Slot,
        nic: &NicPolicy,
    ) -> Result<(), String> {
        if !self.is_serving(vm) {
            return Ok(());
        }
        self.start(host, vm, slot, nic).await
    }

    /// Ends what serves `vm` now, its tasks aborted and awaited so that
    /// their sockets are closed: its totals.
    async fn end(&self, vm: &VmId) -> Option<EgressRefusals> {
        let old = self.lock().remove(vm)?;
        let totals = old.tally.totals();
        for task in old.take_tasks() {
            task.abort();
            let _ = task.await;
        }
        Some(totals)
    }

    /// The totals stored for `vm`, none when unreadable (logged).
    async fn stored(&self, vm: &VmId) -> EgressRefusals {
        match self.store.egress_refusals(vm).await {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%vm, error = %error_chain(&e), "reading a VM's egress refusals; counting from 0");
                EgressRefusals::default()
            }
        }
    }

    /// Stops VM `vm`'s services, its totals written last.
    pub(super) fn stop(&self, vm: &VmId) {
        let Some(running) = self.lock().remove(vm) else {
            return;
        };
        let (store, vm, tally) = (self.store.clone(), vm.clone(), running.tally.clone());
        drop(running);
        tokio::spawn(async move { tally.write(store.as_ref(), &vm).await });
    }

    pub(super) fn is_serving(&self, vm: &VmId) -> bool {
        self.lock().contains_key(vm)
    }

    /// The VMs served now.
    pub(super) fn serving(&self) -> Vec<VmId> {
        self.lock().keys().cloned().collect()
    }

    /// What VM `vm`'s services refused, the stored totals included; none
    /// when it is not served.
    pub(super) fn refusals(&self, vm: &VmId) -> Refusals {
        self.lock()
            .get(vm)
            .map(|r| r.tally.totals())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<VmId, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Accepts the guest's redirected connections, each served by the proxy.
async fn intercept(
    listener: TcpListener,
    protocol: Intercepted,
    egress: Egress,
    policy: Arc<Policy>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "accepting a guest's web connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (egress, policy) = (egress.clone(), policy.clone());
        tokio::spawn(async move {
            egress.serve_intercepted(stream, protocol, &policy).await;
        });
    }
}

/// Connects from inside the VM's namespace.
#[derive(Debug)]
struct InNamespace {
    host: NetHost,
    slot: Slot,
}

#[async_trait]
impl Connector for InNamespace {
    async fn connect(&self, address: SocketAddr) -> io::Result<BoxIo> {
        let fd = self.host.tcp_socket_in(self.slot).await;
        let fd = fd.map_err(|e| io::Error::other(error_chain(&e)))?;
        let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(address))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Box::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use hearth_egress::Host;
    use hearth_net::Ipv4Net;

    use super::*;

    /// The resolver and proxy let through what the VM's tenant opened, and
    /// only that, after the VM's denials.
    #[test]
    fn the_proxy_and_resolver_reach_only_the_private_networks_a_tenant_opened() {
        let net = |t: &str| Ipv4Net::parse(t).unwrap();
        let nic = NicPolicy {
            allow: vec![net("10.20.0.0/16"), net("10.30.0.0/16")],
            deny: vec![net("10.20.0.9")],
            open: vec![net("10.20.0.0/16")],
            ..NicPolicy::default()
        };
        let policy = egress_policy(&nic).unwrap();
        let host = Host::Name("inside.test".into());
        let check = |ip: &str| policy.check_address(&host, ip.parse().unwrap());
        assert!(check("10.20.0.5").is_ok(), "the opened network");
        assert!(check("10.20.0.9").is_err(), "a denial within it");
        assert!(check("10.30.0.5").is_err(), "allowed by the VM, not opened");
        let closed = egress_policy(&NicPolicy {
            open: Vec::new(),
            ..nic
        })
        .unwrap();
        assert!(closed
            .check_address(&host, "10.20.0.5".parse().unwrap())
            .is_err());
    }

    /// A query for `name` (type A), as a guest's stub resolver sends it.
    fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    /// What a VM's services refused is written to the store and is where
    /// the next controller (the store opened again) starts counting from.
    #[tokio::test]
    async fn refusal_counts_survive_a_controller_restart() {
        use hearth_egress::testing::{RecordingConnector, StaticResolver};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        let vm: VmId = "vm-000000000001".parse().unwrap();
        let policy = Policy::allow_list(["good.test"]).unwrap();
        let resolver: Arc<dyn Resolver> = Arc::new(StaticResolver::default());
        let tally = Tally {
            base: EgressRefusals::default(),
            dns: DnsResponder::new(resolver.clone()),
            egress: Egress::new(
                resolver.clone(),
                Arc::new(RecordingConnector::default()),
                Arc::new(NoRecords),
            ),
        };
        for _ in 0..2 {
            tally.dns.answer(&query("bad.test"), &policy).await.unwrap();
        }
        let (mut guest, proxy) = tokio::io::duplex(4096);
        let egress = tally.egress.clone();
        let served = tokio::spawn({
            let policy = policy.clone();
            async move { egress.serve(proxy, &policy).await }
        });
        guest
            .write_all(b"CONNECT bad.test:443 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        guest.read_to_end(&mut answer).await.unwrap();
        served.await.unwrap();
        let counted = EgressRefusals {
            queries: 2,
            connections: 1,
        };
        assert_eq!(tally.totals(), counted);
        {
            let store: Arc<dyn Store> = Arc::new(hearth_store::SqliteStore::open(&path).unwrap());
            let before = GuestServices::new(resolver.clone(), store.clone());
            assert_eq!(before.stored(&vm).await, EgressRefusals::default());
            tally.write(store.as_ref(), &vm).await;
        }
        let store: Arc<dyn Store> = Arc::new(hearth_store::SqliteStore::open(&path).unwrap());
        let after = GuestServices::new(resolver.clone(), store);
        let base = after.stored(&vm).await;
        assert_eq!(
            base, counted,
            "the restarted controller starts from the stored totals"
        );
        // Its services count from 0 again, on top of what was stored.
        let restarted = Tally {
            base,
            dns: DnsResponder::new(resolver),
            ..tally
        };
        restarted
            .dns
            .answer(&query("bad.test"), &policy)
            .await
            .unwrap();
        assert_eq!(restarted.totals().queries, 3, "stored plus counted since");
    }
}
