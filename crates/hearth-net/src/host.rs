//! [`NetHost`]: the kernel side of VM networks. It makes and removes one
//! slot's namespace, TAP, veth pair, addresses, routes and rulesets, and
//! lists which slots the kernel holds; it knows nothing of the store (the
//! caller claims the slot first, see [`crate::Network`]).

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::addressing::{GuestAddressing, TransitPool, GUEST_GATEWAY, GUEST_PREFIX_LEN};
use crate::links::Netlink;
use crate::names::{Prefix, Slot, NS_LINK_NAME, TAP_NAME};
use crate::policy::NicPolicy;
use crate::{netns, nft, tap, thread, NetError};

/// Where VM networks are made: the names' prefix, the transit pool, and
/// the namespace that is "the host" (the one the controller runs in, or a
/// test's own).
#[derive(Clone, Debug)]
pub struct NetHost {
    prefix: Prefix,
    pool: TransitPool,
    host_ns: Arc<OwnedFd>,
}

/// One VM's network as made: its TAP (hand it to the hypervisor) and what
/// the guest is told.
#[derive(Debug)]
pub struct VmNic {
    pub slot: Slot,
    /// `/run/netns/{name}` and the host link are both named this.
    pub name: String,
    pub tap: OwnedFd,
    pub guest: GuestAddressing,
}

impl NetHost {
    /// `host_ns` is the namespace treated as the host: [`netns::current`]
    /// for the controller's own.
    pub fn new(prefix: Prefix, pool: TransitPool, host_ns: OwnedFd) -> NetHost {
        NetHost {
            prefix,
            pool,
            host_ns: Arc::new(host_ns),
        }
    }

    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    pub fn pool(&self) -> &TransitPool {
        &self.pool
    }

    /// Installs the host's ruleset and turns IP forwarding on; run once
    /// before the first VM, again at will (it replaces the table whole).
    pub async fn prepare(&self) -> Result<(), NetError> {
        let ruleset = nft::host_ruleset(&self.prefix, &self.pool);
        self.on_host(move || async move {
            enable_forwarding("the host")?;
            nft::apply(&ruleset, "the host")
        })
        .await
    }

    /// Removes the host's ruleset (the VMs' networks stay).
    pub async fn unprepare(&self) -> Result<(), NetError> {
        let removal = nft::host_removal(&self.prefix);
        self.on_host(move || async move { nft::apply(&removal, "the host") })
            .await
    }

    /// The host's nftables tables (`ip hearth`, ...).
    pub async fn host_tables(&self) -> Result<Vec<String>, NetError> {
        self.on_host(|| async { nft::tables("the host") }).await
    }

    /// Makes `slot`'s network. On failure part of it may exist: call
    /// [`NetHost::destroy`], which removes whatever there is.
    pub async fn create(&self, slot: Slot, policy: &NicPolicy) -> Result<VmNic, NetError> {
        let plan = SlotPlan::new(self, slot, policy);
        let host_ns = Arc::clone(&self.host_ns);
        thread::run(move || async move { plan.make(&host_ns).await }).await
    }

    /// Removes `slot`'s network, whatever part of it exists; `true` when
    /// there was something.
    pub async fn destroy(&self, slot: Slot) -> Result<bool, NetError> {
        let name = self.prefix.slot_name(slot);
        self.on_host(move || async move {
            nft::apply(&nft::table_removal(&name), "the host")?;
            let host = Netlink::open("the host")?;
            let link = host.delete(&name).await?;
            let ns = netns::delete(&name)?;
            Ok(link || ns)
        })
        .await
    }

    /// Gives `slot`'s running network `policy` in place: the namespace's
    /// ruleset replaced in one transaction (its refused count kept: the
    /// named counter survives a flush), the host's hole table made,
    /// replaced or removed. The guest's connections already allowed by
    /// connection tracking that the new policy refuses stop at their next
    /// packet, since every forwarded packet passes the rules.
    pub async fn update(&self, slot: Slot, policy: &NicPolicy) -> Result<(), NetError> {
        let name = self.prefix.slot_name(slot);
        let ruleset = nft::namespace_ruleset(policy);
        let holes = if policy.open.is_empty() {
            nft::table_removal(&name)
        } else {
            nft::slot_holes(&self.prefix, &name, &policy.open)
        };
        let host_ns = Arc::clone(&self.host_ns);
        thread::run(move || async move {
            let ns = netns::open(&name)?;
            enter(&ns, &name)?;
            nft::apply(&ruleset, &name)?;
            enter(&host_ns, "the host")?;
            nft::apply(&holes, "the host")
        })
        .await
    }

    /// How many of the guest's packets `slot`'s namespace refused for their
    /// destination (private, loopback, link-local, ... networks).
    pub async fn refused_packets(&self, slot: Slot) -> Result<u64, NetError> {
        let name = self.prefix.slot_name(slot);
        thread::run(move || async move {
            let ns = netns::open(&name)?;
            enter(&ns, &name)?;
            nft::refused_packets(&name)
        })
        .await
    }

    /// Every slot the kernel has a namespace or a host link for.
    pub async fn kernel_slots(&self) -> Result<BTreeSet<Slot>, NetError> {
        let prefix = self.prefix.clone();
        self.on_host(move || async move {
            let links = Netlink::open("the host")?.names().await?;
            let names = netns::list()?.into_iter().chain(links);
            Ok(names.filter_map(|n| prefix.parse_slot(&n)).collect())
        })
        .await
    }

    /// Runs `work` on a thread in the host namespace.
    async fn on_host<T, F, Fut>(&self, work: F) -> Result<T, NetError>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, NetError>>,
    {
        let host_ns = Arc::clone(&self.host_ns);
        thread::run(move || async move {
            enter(&host_ns, "the host")?;
            work().await
        })
        .await
    }
}

/// Everything [`NetHost::create`] needs, moved onto its thread.
struct SlotPlan {
    slot: Slot,
    name: String,
    host_address: std::net::Ipv4Addr,
    ns_address: std::net::Ipv4Addr,
    ruleset: String,
    /// The host's hole table, when the VM's tenant opened networks.
    holes: Option<String>,
}

impl SlotPlan {
    fn new(host: &NetHost, slot: Slot, policy: &NicPolicy) -> SlotPlan {
        let name = host.prefix.slot_name(slot);
        SlotPlan {
            ruleset: nft::namespace_ruleset(policy),
            holes: (!policy.open.is_empty())
                .then(|| nft::slot_holes(&host.prefix, &name, &policy.open)),
            slot,
            name,
            host_address: host.pool.host_address(slot),
            ns_address: host.pool.namespace_address(slot),
        }
    }

    /// Runs on its own thread: opens the host's socket, then creates and
    /// enters the namespace and builds inside it, then finishes the host's
    /// end.
    async fn make(self, host_ns: &OwnedFd) -> Result<VmNic, NetError> {
        enter(host_ns, "the host")?;
        let host = Netlink::open("the host")?;
        netns::create_and_enter(&self.name)?;
        let ns = Netlink::open(&self.name)?;
        ns.up("lo").await?;
        let tap = self.make_tap(&ns).await?;
        ns.add_veth(NS_LINK_NAME, &self.name).await?;
        let peer = ns.must_index(&self.name).await?;
        ns.move_to(peer, host_ns.as_raw_fd(), &self.name).await?;
        let inside = ns.up(NS_LINK_NAME).await?;
        ns.add_address(inside, self.ns_address, 30).await?;
        ns.default_route(self.host_address).await?;
        enable_forwarding(&self.name)?;
        nft::apply(&self.ruleset, &self.name)?;
        let outside = host.up(&self.name).await?;
        host.add_address(outside, self.host_address, 30).await?;
        if let Some(holes) = &self.holes {
            enter(host_ns, "the host")?;
            nft::apply(holes, "the host")?;
        }
        Ok(VmNic {
            slot: self.slot,
            name: self.name,
            tap,
            guest: GuestAddressing::fixed(),
        })
    }

    async fn make_tap(&self, ns: &Netlink) -> Result<OwnedFd, NetError> {
        let tap = tap::open(TAP_NAME).map_err(|source| NetError::Tap {
            place: self.name.clone(),
            source,
        })?;
        let index = ns.up(TAP_NAME).await?;
        ns.add_address(index, GUEST_GATEWAY, GUEST_PREFIX_LEN)
            .await?;
        Ok(tap)
    }
}

fn enter(ns: &OwnedFd, place: &str) -> Result<(), NetError> {
    netns::enter(ns).map_err(|source| NetError::Enter {
        place: place.to_owned(),
        source,
    })
}

/// IPv4 forwarding in the calling thread's namespace (`/proc/sys/net` is
/// the opener's namespace's).
fn enable_forwarding(place: &str) -> Result<(), NetError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|source| NetError::Sysctl {
        what: "net.ipv4.ip_forward",
        place: place.to_owned(),
        source,
    })
}
