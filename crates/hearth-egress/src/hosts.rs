//! Names answered from a fixed table before the host's resolver is asked,
//! like `/etc/hosts` for the proxy alone: a test (or an operator) gives a
//! fake provider a real-looking name (`auth.fake-provider.test`) that the
//! guest uses exactly as it would a real provider's, without touching the
//! host's DNS. The table only answers the lookup: the proxy still checks
//! every address it gives against the policy, so pointing a name at
//! 127.0.0.1 reaches nothing unless the policy allows that network too.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::net::{Resolver, SystemResolver};
use crate::policy::{is_dns_name, normalize_name, PolicyError};

/// A [`Resolver`] that answers configured names with fixed addresses and
/// asks the inner resolver for every other name.
#[derive(Clone)]
pub struct StaticHosts {
    names: HashMap<String, Vec<IpAddr>>,
    inner: Arc<dyn Resolver>,
}

impl fmt::Debug for StaticHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.names.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("StaticHosts")
            .field("names", &names)
            .field("inner", &self.inner)
            .finish()
    }
}

impl StaticHosts {
    /// An empty table in front of `inner`.
    pub fn new(inner: Arc<dyn Resolver>) -> Self {
        Self {
            names: HashMap::new(),
            inner,
        }
    }

    /// An empty table in front of the host's resolver.
    pub fn system() -> Self {
        Self::new(Arc::new(SystemResolver))
    }

    /// Answers `name` (compared in lower case, without a trailing dot)
    /// with `addresses`, replacing what the table held for it. A name that
    /// is not a DNS host name, or no address at all, is refused.
    pub fn with(mut self, name: &str, addresses: &[IpAddr]) -> Result<Self, PolicyError> {
        let normalized = normalize_name(name);
        if !is_dns_name(&normalized) || normalized.parse::<IpAddr>().is_ok() {
            return Err(PolicyError::BadDomain(name.to_owned()));
        }
        if addresses.is_empty() {
            return Err(PolicyError::NoAddress(name.to_owned()));
        }
        self.names.insert(normalized, addresses.to_vec());
        Ok(self)
    }

    /// The fixed addresses of `name`, if the table has it.
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        self.names.get(&normalize_name(name)).map(Vec::as_slice)
    }
}

#[async_trait]
impl Resolver for StaticHosts {
    async fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        match self.lookup(name) {
            Some(addresses) => Ok(addresses.to_vec()),
            None => self.inner.resolve(name).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::StaticResolver;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn hosts() -> (StaticHosts, Arc<StaticResolver>) {
        let inner =
            Arc::new(StaticResolver::default().with("login.example.test", &["93.184.216.34"]));
        let hosts = StaticHosts::new(inner.clone())
            .with("Auth.Fake-Provider.test.", &[ip("127.0.0.1")])
            .unwrap();
        (hosts, inner)
    }

    #[tokio::test]
    async fn configured_names_never_reach_the_inner_resolver() {
        let (hosts, inner) = hosts();
        for asked in ["auth.fake-provider.test", "AUTH.fake-provider.TEST."] {
            assert_eq!(hosts.resolve(asked).await.unwrap(), vec![ip("127.0.0.1")]);
        }
        assert!(inner.lookups().is_empty(), "{:?}", inner.lookups());
    }

    #[tokio::test]
    async fn other_names_go_to_the_inner_resolver() {
        let (hosts, inner) = hosts();
        let found = hosts.resolve("login.example.test").await.unwrap();
        assert_eq!(found, vec![ip("93.184.216.34")]);
        let missing = hosts.resolve("nowhere.test").await.unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(inner.lookups(), ["login.example.test", "nowhere.test"]);
    }

    #[test]
    fn a_later_entry_replaces_an_earlier_one() {
        let (hosts, _) = hosts();
        let hosts = hosts
            .with("auth.fake-provider.test", &[ip("::1"), ip("127.0.0.2")])
            .unwrap();
        assert_eq!(
            hosts.lookup("auth.fake-provider.test").unwrap(),
            [ip("::1"), ip("127.0.0.2")]
        );
    }

    #[test]
    fn bad_names_and_empty_address_lists_are_refused() {
        for bad in [
            "",
            "a b",
            "*.example.test",
            "-x.test",
            "127.0.0.1",
            "http://x",
        ] {
            let e = StaticHosts::system()
                .with(bad, &[ip("127.0.0.1")])
                .unwrap_err();
            assert_eq!(e, PolicyError::BadDomain(bad.to_owned()), "{bad:?}");
        }
        let e = StaticHosts::system().with("x.test", &[]).unwrap_err();
        assert!(e.to_string().contains("x.test"), "{e}");
    }

    #[test]
    fn debug_lists_the_names() {
        let (hosts, _) = hosts();
        let text = format!("{hosts:?}");
        assert!(text.contains("auth.fake-provider.test"), "{text}");
    }
}
