//! `hearth tenant network`: a tenant's network policy through `hearth
//! serve`'s admin API.

use std::process::ExitCode;

use hearth_types::api::{NetworkPolicy, TenantNetworkPolicy};
use hearth_types::TenantId;

use super::client::Client;
use crate::cli::{ApiArgs, NetPolicyArgs, TenantCommand, TenantNetworkCommand};

pub fn run(command: TenantCommand) -> anyhow::Result<ExitCode> {
    let TenantCommand::Network(command) = command;
    match command {
        TenantNetworkCommand::Set { api, tenant, net } => set(&api, &tenant, &net),
        TenantNetworkCommand::Show { api, tenant, json } => show(&api, &tenant, json),
        TenantNetworkCommand::Rm { api, tenant } => rm(&api, &tenant),
    }
}

fn path(tenant: &TenantId) -> String {
    format!("/v1/tenants/{tenant}/network-policy")
}

fn set(api: &ApiArgs, tenant: &TenantId, net: &NetPolicyArgs) -> anyhow::Result<ExitCode> {
    let stored: TenantNetworkPolicy = Client::new(api)?.put(&path(tenant), &net.policy())?;
    eprintln!(
        "hearth: tenant {tenant}'s network policy set: {}; VMs created from now on get it",
        describe(&stored.policy)
    );
    Ok(ExitCode::SUCCESS)
}

fn show(api: &ApiArgs, tenant: &TenantId, json: bool) -> anyhow::Result<ExitCode> {
    let stored: TenantNetworkPolicy = Client::new(api)?.get(&path(tenant))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stored)?);
    } else {
        println!("tenant {tenant}: {}", describe(&stored.policy));
        println!("updated {}", stored.updated_at);
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(api: &ApiArgs, tenant: &TenantId) -> anyhow::Result<ExitCode> {
    let _: TenantNetworkPolicy = Client::new(api)?.delete(&path(tenant))?;
    eprintln!("hearth: tenant {tenant}'s network policy removed (running VMs keep theirs)");
    Ok(ExitCode::SUCCESS)
}

/// `allow 10.20.0.0/16; deny 203.0.113.2/32; 8000 kbit/s`, or `no limits`.
fn describe(policy: &NetworkPolicy) -> String {
    let mut parts = Vec::new();
    let mut list = |what: &str, items: &[String]| {
        if !items.is_empty() {
            parts.push(format!("{what} {}", items.join(", ")));
        }
    };
    list("allow", &policy.allow);
    list("deny", &policy.deny);
    list("domains", &policy.allow_domains);
    if let Some(rate) = policy.bandwidth_kbit {
        parts.push(format!("{rate} kbit/s"));
    }
    if parts.is_empty() {
        return "no limits".to_owned();
    }
    parts.join("; ")
}
