//! What a tenant's changed policy does to its running VMs: each one's
//! policy (the merged one its record keeps) is narrowed to lie within the
//! tenant's new policy, at once and for good (the record keeps the
//! narrowed one, so a reboot or a restarted server does not widen it
//! again). A tenant's policy never widens a running VM: what a VM asked
//! for at its create is not kept apart from what it got, so a wider
//! tenant policy reaches the tenant's VMs at their next create.

use super::{domain_within, opened};
use crate::policy::{Ipv4Net, NicPolicy};

/// The name a VM's domain list holds when nothing of it is left within
/// its tenant's: a list naming only this lets no name through (`.invalid`
/// never resolves, RFC 6761), where an empty list would let every name.
pub const NO_DOMAIN: &str = "nothing.invalid";

/// Every network: denied when nothing of a VM's `allow` is left.
const EVERYWHERE: Ipv4Net = Ipv4Net::new(0, 0, 0, 0, 0);

impl NicPolicy {
    /// A policy that lets nothing through and resolves no name (a pooled
    /// VM's while it waits for a tenant).
    pub fn reaching_nothing() -> NicPolicy {
        NicPolicy {
            deny: vec![EVERYWHERE],
            allow: Vec::new(),
            bandwidth_kbit: None,
            allow_domains: vec![NO_DOMAIN.to_owned()],
            open: Vec::new(),
        }
    }
}

/// Running VM `vm`'s policy within its tenant's new one (`None`: the
/// tenant has none any more: the VM keeps its own, without what the
/// tenant opened).
pub fn narrow_running(vm: NicPolicy, tenant: Option<&NicPolicy>) -> NicPolicy {
    let Some(tenant) = tenant else {
        return NicPolicy {
            open: Vec::new(),
            ..vm
        };
    };
    let mut deny = vm.deny.clone();
    deny.extend(tenant.deny.iter().filter(|n| !vm.deny.contains(n)));
    let allow = common_networks(&vm.allow, &tenant.allow);
    if allow.as_ref().is_some_and(Vec::is_empty) && !deny.contains(&EVERYWHERE) {
        deny.push(EVERYWHERE);
    }
    let allow = allow.unwrap_or_default();
    let allow_domains = match common_domains(&vm.allow_domains, &tenant.allow_domains) {
        Some(none) if none.is_empty() => vec![NO_DOMAIN.to_owned()],
        Some(common) => common,
        None => Vec::new(),
    };
    let bandwidth_kbit = match (vm.bandwidth_kbit, tenant.bandwidth_kbit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let open = opened(&allow, Some(tenant));
    NicPolicy {
        deny,
        allow,
        bandwidth_kbit,
        allow_domains,
        open,
    }
}

/// The networks both lists reach (an empty list reaches all): `None` when
/// both reach all, `Some(empty)` when they share none.
fn common_networks(vm: &[Ipv4Net], tenant: &[Ipv4Net]) -> Option<Vec<Ipv4Net>> {
    common(vm, tenant, |inner, outer| outer.contains(inner))
}

/// The names both lists let through, the same way.
fn common_domains(vm: &[String], tenant: &[String]) -> Option<Vec<String>> {
    common(vm, tenant, |inner, outer| domain_within(inner, outer))
}

/// What two lists both let through, `within(a, b)` saying whether `b`
/// lets through all that `a` does: of each pair, the narrower.
fn common<T: Clone + PartialEq>(
    vm: &[T],
    tenant: &[T],
    within: impl Fn(&T, &T) -> bool,
) -> Option<Vec<T>> {
    match (vm.is_empty(), tenant.is_empty()) {
        (true, true) => return None,
        (true, false) => return Some(tenant.to_vec()),
        (false, true) => return Some(vm.to_vec()),
        (false, false) => {}
    }
    let mut both = Vec::new();
    for v in vm {
        for t in tenant {
            let inner = if within(v, t) {
                v
            } else if within(t, v) {
                t
            } else {
                continue;
            };
            if !both.contains(inner) {
                both.push(inner.clone());
            }
        }
    }
    Some(both)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(texts: &[&str]) -> Vec<Ipv4Net> {
        texts.iter().map(|t| Ipv4Net::parse(t).unwrap()).collect()
    }

    fn policy(allow: &[&str], deny: &[&str], domains: &[&str]) -> NicPolicy {
        NicPolicy {
            allow: nets(allow),
            deny: nets(deny),
            bandwidth_kbit: None,
            allow_domains: domains.iter().map(|d| d.to_string()).collect(),
            open: Vec::new(),
        }
    }

    #[test]
    fn a_running_vm_is_narrowed_to_its_tenant_s_new_policy_never_widened() {
        let vm = policy(&["203.0.113.0/24"], &["192.0.2.1"], &[]);
        let tighter = policy(
            &["203.0.113.8/29", "198.51.100.0/24"],
            &["203.0.113.9"],
            &[],
        );
        let narrowed = narrow_running(vm.clone(), Some(&tighter));
        assert_eq!(narrowed.allow, nets(&["203.0.113.8/29"]));
        assert_eq!(narrowed.deny, nets(&["192.0.2.1", "203.0.113.9"]));
        let wider = policy(&["0.0.0.0/0"], &[], &[]);
        assert_eq!(
            narrow_running(vm.clone(), Some(&wider)).allow,
            vm.allow,
            "a wider tenant leaves the VM as it was"
        );
        let free = narrow_running(policy(&[], &[], &[]), Some(&tighter));
        assert_eq!(
            free.allow, tighter.allow,
            "a VM that named none gets the tenant's"
        );
    }

    #[test]
    fn nothing_left_in_common_reaches_nothing_rather_than_everything() {
        let vm = policy(&["203.0.113.0/24"], &[], &["a.example.com"]);
        let elsewhere = policy(&["198.51.100.0/24"], &[], &["*.other.test"]);
        let narrowed = narrow_running(vm, Some(&elsewhere));
        assert!(narrowed.allow.is_empty());
        assert!(narrowed.deny.contains(&EVERYWHERE), "{:?}", narrowed.deny);
        assert_eq!(narrowed.allow_domains, [NO_DOMAIN]);
        let domains = policy(&[], &[], &["*.example.com", "api.test"]);
        let within = narrow_running(policy(&[], &[], &["*.example.com"]), Some(&domains));
        assert_eq!(within.allow_domains, ["*.example.com"]);
        let below = policy(&[], &[], &["a.example.com"]);
        let any = narrow_running(policy(&[], &[], &[]), Some(&below));
        assert_eq!(any.allow_domains, ["a.example.com"]);
    }

    #[test]
    fn a_removed_tenant_policy_takes_back_what_it_opened() {
        let mut vm = policy(&["10.20.0.0/16"], &[], &[]);
        vm.open = nets(&["10.20.0.0/16"]);
        let after = narrow_running(vm.clone(), None);
        assert!(after.open.is_empty());
        assert_eq!(after.allow, vm.allow);
        let tenant = policy(&["10.20.0.0/16"], &[], &[]);
        assert_eq!(
            narrow_running(vm, Some(&tenant)).open,
            nets(&["10.20.0.0/16"])
        );
    }
}
