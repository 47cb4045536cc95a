//! What can go wrong making or removing a VM's network, each naming the
//! object and the step, and how to fix what an operator can fix.

use std::io;

use hearth_store::StoreError;
use hearth_types::VmId;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network name prefix {0:?} is not usable: use 1 to 8 lowercase letters and digits, starting with a letter")]
    BadPrefix(String),
    #[error("address pool {0} is not usable: give an aligned IPv4 network between /14 and /28, such as 10.231.0.0/16")]
    BadPool(String),
    #[error("network namespace {name}: {step}")]
    Namespace {
        name: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("listing /run/netns")]
    ListNamespaces(#[source] io::Error),
    #[error("opening the TAP of {place}: is /dev/net/tun there (modprobe tun)?")]
    Tap {
        place: String,
        #[source]
        source: io::Error,
    },
    #[error("{doing}")]
    Netlink {
        doing: String,
        #[source]
        source: io::Error,
    },
    #[error("the nft binary was not found: install nftables (scripts/setup-host does)")]
    NoNft,
    #[error("running nft in {place}")]
    Nft {
        place: String,
        #[source]
        source: io::Error,
    },
    #[error("nft refused the ruleset for {place}: {stderr}")]
    NftRefused { place: String, stderr: String },
    #[error("writing {what} in {place}")]
    Sysctl {
        what: &'static str,
        place: String,
        #[source]
        source: io::Error,
    },
    #[error("entering the namespace of {place}")]
    Enter {
        place: String,
        #[source]
        source: io::Error,
    },
    #[error("no network slot is free for VM {0}: every slot of the pool is held or in its grace period; delete VMs or give a larger pool")]
    PoolFull(VmId),
    #[error("the network slots in the store")]
    Store(#[source] StoreError),
    #[error("the store gave slot number {0}, outside the pool")]
    SlotOutOfRange(u32),
    #[error("starting the thread that works in a namespace")]
    Runtime(#[source] io::Error),
    #[error("the thread working in a namespace died")]
    ThreadDied,
}
