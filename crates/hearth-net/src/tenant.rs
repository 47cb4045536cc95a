//! A tenant's network policy and how it bounds each of its VMs' own: the
//! tenant's is checked once when an admin sets it, and merged into a VM's
//! at the VM's create. A VM's policy can only narrow its tenant's: denials
//! add up, its `allow` and `allow_domains` must lie within the tenant's
//! (when the tenant names any), the tighter rate wins. The one thing only
//! a tenant's policy can do is open a network of the always refused
//! classes: an `allow` entry within a private, carrier-grade NAT or
//! link-local network lets the tenant's VMs reach it (both the VM's
//! namespace and the host's table get a hole for it); the same entry in a
//! VM's own policy opens nothing.

use hearth_types::api::NetworkPolicy;

use crate::policy::{Ipv4Net, NicPolicy};

mod running;

pub use running::{narrow_running, NO_DOMAIN};

/// The always refused networks a tenant's `allow` may open.
const OPENABLE: [Ipv4Net; 5] = [
    Ipv4Net::new(10, 0, 0, 0, 8),
    Ipv4Net::new(100, 64, 0, 0, 10),
    Ipv4Net::new(169, 254, 0, 0, 16),
    Ipv4Net::new(172, 16, 0, 0, 12),
    Ipv4Net::new(192, 168, 0, 0, 16),
];

/// The always refused networks nothing opens, with what they are.
const NEVER: [(Ipv4Net, &str); 3] = [
    (Ipv4Net::new(0, 0, 0, 0, 8), "\"this network\" (0.0.0.0/8)"),
    (Ipv4Net::new(127, 0, 0, 0, 8), "loopback (127.0.0.0/8)"),
    (
        Ipv4Net::new(224, 0, 0, 0, 3),
        "multicast or reserved (224.0.0.0/3)",
    ),
];

/// Checks a tenant's policy as an admin gave it; each error names the
/// field and the fix.
pub fn check(policy: &NetworkPolicy) -> Result<NicPolicy, String> {
    let checked = NicPolicy::from_request(policy)?;
    for net in &checked.allow {
        if let Some((_, what)) = NEVER.iter().find(|(never, _)| never.contains(net)) {
            return Err(format!(
                "network_policy.allow: {net} is within {what}, which no VM reaches; \
                 remove it (private networks such as 10.0.0.0/8 can be allowed)"
            ));
        }
    }
    Ok(checked)
}

/// VM `vm`'s policy within its tenant's (`None`: the tenant has none):
/// the policy its NIC gets, with the always refused networks the tenant
/// opened in `open`.
pub fn merge(vm: NicPolicy, tenant: Option<&NicPolicy>) -> Result<NicPolicy, String> {
    let Some(tenant) = tenant else {
        return Ok(NicPolicy {
            open: Vec::new(),
            ..vm
        });
    };
    let mut deny = tenant.deny.clone();
    deny.extend(vm.deny.into_iter().filter(|n| !tenant.deny.contains(n)));
    let allow = narrowed_networks(vm.allow, &tenant.allow)?;
    let allow_domains = narrowed_domains(vm.allow_domains, &tenant.allow_domains)?;
    let bandwidth_kbit = match (vm.bandwidth_kbit, tenant.bandwidth_kbit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let open = opened(&allow, Some(tenant));
    Ok(NicPolicy {
        deny,
        allow,
        bandwidth_kbit,
        allow_domains,
        open,
    })
}

/// The networks of `allow` (a VM's merged list, as its record keeps it)
/// that its tenant's policy opens: those within one of the tenant's own
/// `allow` entries that is itself within an openable always refused
/// network.
/// Worked out again from the tenant's current policy whenever the VM's
/// network is made, so a tenant's allowance taken back is not kept.
pub fn opened(allow: &[Ipv4Net], tenant: Option<&NicPolicy>) -> Vec<Ipv4Net> {
    let Some(tenant) = tenant else {
        return Vec::new();
    };
    let openable = |n: &Ipv4Net| OPENABLE.iter().any(|o| o.contains(n));
    // The tenant's entry must itself be private: `0.0.0.0/0` on a tenant
    // would otherwise let a VM's own allow open any private network.
    let opening: Vec<&Ipv4Net> = tenant.allow.iter().filter(|t| openable(t)).collect();
    allow
        .iter()
        .filter(|n| opening.iter().any(|t| t.contains(n)))
        .copied()
        .collect()
}

/// A VM's `allow` within its tenant's: the tenant's when the VM names
/// none, the VM's when each of its entries is within one of the tenant's.
fn narrowed_networks(vm: Vec<Ipv4Net>, tenant: &[Ipv4Net]) -> Result<Vec<Ipv4Net>, String> {
    if tenant.is_empty() {
        return Ok(vm);
    }
    if vm.is_empty() {
        return Ok(tenant.to_vec());
    }
    match vm.iter().find(|n| !tenant.iter().any(|t| t.contains(n))) {
        Some(outside) => Err(format!(
            "network_policy.allow: {outside} is outside what the VM's tenant may reach ({}); \
             name networks within those, or ask an admin to widen the tenant's network policy",
            list(tenant)
        )),
        None => Ok(vm),
    }
}

/// A VM's `allow_domains` within its tenant's, the same way.
fn narrowed_domains(vm: Vec<String>, tenant: &[String]) -> Result<Vec<String>, String> {
    if tenant.is_empty() {
        return Ok(vm);
    }
    if vm.is_empty() {
        return Ok(tenant.to_vec());
    }
    match vm
        .iter()
        .find(|d| !tenant.iter().any(|t| domain_within(d, t)))
    {
        Some(outside) => Err(format!(
            "network_policy.allow_domains: {outside:?} is outside the VM's tenant's domains ({}); \
             name domains within those, or ask an admin to widen the tenant's network policy",
            tenant.join(", ")
        )),
        None => Ok(vm),
    }
}

/// Whether every name pattern `name` matches, pattern `within` matches
/// too (`*.example.com`: every name below example.com).
fn domain_within(name: &str, within: &str) -> bool {
    let (name, within) = (normal(name), normal(within));
    match (name.strip_prefix("*."), within.strip_prefix("*.")) {
        (_, None) => name == within,
        (None, Some(parent)) => is_below(&name, parent),
        (Some(below), Some(parent)) => below == parent || is_below(below, parent),
    }
}

fn is_below(name: &str, parent: &str) -> bool {
    name.strip_suffix(parent)
        .is_some_and(|label| label.len() > 1 && label.ends_with('.'))
}

fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn list(nets: &[Ipv4Net]) -> String {
    let texts: Vec<String> = nets.iter().map(Ipv4Net::to_string).collect();
    texts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(texts: &[&str]) -> Vec<Ipv4Net> {
        texts.iter().map(|t| Ipv4Net::parse(t).unwrap()).collect()
    }

    fn policy(allow: &[&str], deny: &[&str], rate: Option<u32>, domains: &[&str]) -> NicPolicy {
        NicPolicy {
            allow: nets(allow),
            deny: nets(deny),
            bandwidth_kbit: rate,
            allow_domains: domains.iter().map(|d| d.to_string()).collect(),
            open: Vec::new(),
        }
    }

    #[test]
    fn denials_add_up_and_the_tighter_rate_wins() {
        let tenant = policy(&[], &["203.0.113.2", "198.51.100.0/24"], Some(8000), &[]);
        let vm = policy(&[], &["198.51.100.0/24", "192.0.2.1"], Some(64_000), &[]);
        let merged = merge(vm, Some(&tenant)).unwrap();
        assert_eq!(
            merged.deny,
            nets(&["203.0.113.2", "198.51.100.0/24", "192.0.2.1"])
        );
        assert_eq!(merged.bandwidth_kbit, Some(8000));
        let unlimited = policy(&[], &[], None, &[]);
        let limited = policy(&[], &[], Some(500), &[]);
        assert_eq!(
            merge(limited, Some(&unlimited)).unwrap().bandwidth_kbit,
            Some(500)
        );
    }

    #[test]
    fn a_vm_allow_list_only_narrows_its_tenant_s() {
        let tenant = policy(&["203.0.113.0/24"], &[], None, &[]);
        let inherits = merge(policy(&[], &[], None, &[]), Some(&tenant)).unwrap();
        assert_eq!(inherits.allow, nets(&["203.0.113.0/24"]));
        let narrower = merge(policy(&["203.0.113.8/29"], &[], None, &[]), Some(&tenant));
        assert_eq!(narrower.unwrap().allow, nets(&["203.0.113.8/29"]));
        let wider = merge(policy(&["203.0.0.0/16"], &[], None, &[]), Some(&tenant));
        let err = wider.unwrap_err();
        assert!(
            err.starts_with("network_policy.allow: 203.0.0.0/16 is outside")
                && err.contains("203.0.113.0/24"),
            "{err}"
        );
        let free = merge(policy(&["198.51.100.0/24"], &[], None, &[]), None).unwrap();
        assert_eq!(free.allow, nets(&["198.51.100.0/24"]));
    }

    #[test]
    fn domains_narrow_within_the_tenant_s_when_it_names_any() {
        let tenant = policy(&[], &[], None, &["*.example.com", "api.test"]);
        let ok = policy(
            &[],
            &[],
            None,
            &["a.example.com", "*.b.example.com", "API.test"],
        );
        assert_eq!(merge(ok, Some(&tenant)).unwrap().allow_domains.len(), 3);
        let all = merge(policy(&[], &[], None, &[]), Some(&tenant)).unwrap();
        assert_eq!(all.allow_domains, ["*.example.com", "api.test"]);
        for outside in ["example.com", "evil.test", "*.test", "xexample.com"] {
            let vm = policy(&[], &[], None, &[outside]);
            let err = merge(vm, Some(&tenant)).unwrap_err();
            assert!(err.starts_with("network_policy.allow_domains:"), "{err}");
        }
        let open = policy(&[], &[], None, &[]);
        let vm = policy(&[], &[], None, &["anything.test"]);
        assert_eq!(merge(vm, Some(&open)).unwrap().allow_domains.len(), 1);
    }

    #[test]
    fn only_a_tenant_s_allowance_opens_a_private_network() {
        let vm_alone = merge(policy(&["10.20.0.0/16"], &[], None, &[]), None).unwrap();
        assert!(vm_alone.open.is_empty(), "a VM's own allow opens nothing");
        let tenant = policy(&["10.20.0.0/16", "0.0.0.0/0"], &[], None, &[]);
        let unnamed = merge(policy(&["10.20.0.0/16"], &[], None, &[]), Some(&tenant)).unwrap();
        assert_eq!(unnamed.open, nets(&["10.20.0.0/16"]));
        let narrower = merge(policy(&["10.20.1.0/24"], &[], None, &[]), Some(&tenant)).unwrap();
        assert_eq!(narrower.open, nets(&["10.20.1.0/24"]));
        let inherits = merge(policy(&[], &[], None, &[]), Some(&tenant)).unwrap();
        assert_eq!(
            inherits.open,
            nets(&["10.20.0.0/16"]),
            "0.0.0.0/0 opens nothing"
        );
        let world = policy(&["0.0.0.0/0"], &[], None, &[]);
        let inside = merge(policy(&["10.20.0.0/16"], &[], None, &[]), Some(&world)).unwrap();
        assert!(
            inside.open.is_empty(),
            "the whole internet is no private allowance"
        );
        let taken_back = policy(&["203.0.113.0/24"], &[], None, &[]);
        assert!(opened(&nets(&["10.20.0.0/16"]), Some(&taken_back)).is_empty());
    }

    #[test]
    fn a_tenant_policy_may_not_name_loopback_or_multicast() {
        let ok = NetworkPolicy {
            allow: vec!["10.20.0.0/16".into(), "0.0.0.0/0".into()],
            ..NetworkPolicy::default()
        };
        assert!(check(&ok).is_ok());
        for bad in ["127.0.0.1", "224.0.0.0/4", "0.0.0.0/8"] {
            let policy = NetworkPolicy {
                allow: vec![bad.into()],
                ..NetworkPolicy::default()
            };
            let err = check(&policy).unwrap_err();
            assert!(err.starts_with("network_policy.allow:"), "{err}");
            assert!(err.contains("which no VM reaches"), "{err}");
        }
        let host_bits = NetworkPolicy {
            deny: vec!["10.20.0.1/16".into()],
            ..NetworkPolicy::default()
        };
        assert!(check(&host_bits)
            .unwrap_err()
            .contains("write 10.20.0.0/16"));
    }
}
