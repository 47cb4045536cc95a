//! hearth-net: a VM's network on the host, and the only crate that changes
//! the host's network. Per VM one network namespace holding its TAP and one
//! end of a routed veth pair (no bridge: no port limit, no layer-2 path
//! between guests), the same guest address and MAC in every VM, source NAT
//! in the namespace and on the host, nftables rulesets hearth generates
//! and applies whole. Slots are kept in the store ([`Network`]); the
//! kernel side alone is [`NetHost`]. See docs/networking.md.

mod addressing;
mod error;
mod guest_sockets;
mod host;
mod links;
mod names;
pub mod netns;
mod network;
mod nft;
mod policy;
pub mod preflight;
mod reconcile;
mod tap;
pub mod tenant;
mod thread;

pub use addressing::{
    GuestAddressing, TransitPool, GUEST_ADDRESS, GUEST_GATEWAY, GUEST_MAC, GUEST_PREFIX_LEN,
};
pub use error::NetError;
pub use guest_sockets::{GuestListeners, DNS_PORT, INTERCEPT_HTTP_PORT, INTERCEPT_TLS_PORT};
pub use host::{NetHost, VmNic};
pub use names::{Prefix, Slot, MAX_SLOTS, NS_LINK_NAME, NS_TABLE, TAP_NAME};
pub use network::{Network, SLOT_GRACE};
pub use nft::nft_binary;
pub use policy::{Ipv4Net, NicPolicy, MAX_BANDWIDTH_KBIT, MAX_NETWORKS, MIN_BANDWIDTH_KBIT};
pub use reconcile::{Orphans, ReconcileReport};
