//! Links, addresses and routes through rtnetlink. A socket belongs to the
//! namespace its thread was in when it was opened, so a [`Netlink`] opened
//! before entering a VM's namespace keeps working on the host's.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::NetError;

/// A route netlink socket in one namespace.
#[derive(Debug)]
pub(crate) struct Netlink {
    handle: Handle,
    /// Which namespace, for messages: "the host", "hearth-s17".
    place: String,
}

impl Netlink {
    /// Opens a socket in the calling thread's namespace; its connection runs
    /// on the current runtime.
    pub(crate) fn open(place: &str) -> Result<Netlink, NetError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| NetError::Netlink {
                doing: format!("opening a netlink socket in {place}"),
                source,
            })?;
        tokio::spawn(connection);
        Ok(Netlink {
            handle,
            place: place.to_owned(),
        })
    }

    fn fail(&self, doing: String) -> impl FnOnce(rtnetlink::Error) -> NetError + '_ {
        move |e| NetError::Netlink {
            doing: format!("{doing} in {}", self.place),
            source: to_io(e),
        }
    }

    /// The index of link `name`, `None` when there is none.
    pub(crate) async fn index(&self, name: &str) -> Result<Option<u32>, NetError> {
        let mut found = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match found.try_next().await {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.fail(format!("looking up link {name}"))(e)),
        }
    }

    /// The index of link `name`, which must exist.
    pub(crate) async fn must_index(&self, name: &str) -> Result<u32, NetError> {
        self.index(name).await?.ok_or_else(|| NetError::Netlink {
            doing: format!("looking up link {name} in {}", self.place),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })
    }

    /// Every link's name.
    pub(crate) async fn names(&self) -> Result<Vec<String>, NetError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(self.fail("listing links".to_owned()))?;
        Ok(links.iter().filter_map(link_name).collect())
    }

    pub(crate) async fn add_veth(&self, name: &str, peer: &str) -> Result<(), NetError> {
        let message = LinkVeth::new(name, peer).build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .map_err(self.fail(format!("creating veth pair {name}/{peer}")))
    }

    /// Moves link `index` into the namespace `ns` stands for.
    pub(crate) async fn move_to(&self, index: u32, ns: RawFd, what: &str) -> Result<(), NetError> {
        let message = LinkUnspec::new_with_index(index).setns_by_fd(ns).build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(self.fail(format!("moving link {what} to its namespace")))
    }

    pub(crate) async fn up(&self, name: &str) -> Result<u32, NetError> {
        let index = self.must_index(name).await?;
        let message = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(self.fail(format!("bringing link {name} up")))?;
        Ok(index)
    }

    pub(crate) async fn add_address(
        &self,
        index: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .execute()
            .await
            .map_err(self.fail(format!("adding address {address}/{prefix_len}")))
    }

    pub(crate) async fn default_route(&self, gateway: Ipv4Addr) -> Result<(), NetError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(self.fail(format!("adding a default route via {gateway}")))
    }

    /// Deletes link `name`; `false` when there was none.
    pub(crate) async fn delete(&self, name: &str) -> Result<bool, NetError> {
        let Some(index) = self.index(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(self.fail(format!("deleting link {name}"))(e)),
        }
    }
}

fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}
