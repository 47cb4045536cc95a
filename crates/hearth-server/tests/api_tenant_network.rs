//! The tenant network policy routes over real HTTP and a real store,
//! booting nothing: admin tokens only; bad policies are refused naming the
//! field and the fix; a policy is stored, shown and removed. What it does
//! to a VM is `crates/hearth/tests/vm_network.rs`'s (real VMs).

mod common;

use common::*;
use hearth_server::ServerConfig;
use hearth_types::api::TenantNetworkPolicy;

const PATH: &str = "/v1/tenants/team-a/network-policy";

#[tokio::test]
async fn only_admin_tokens_see_or_change_a_tenant_s_network_policy() {
    let server = server(ServerConfig::default()).await;
    let tenant = server.token("team-a", false).await;
    let requests = [
        server.get(&tenant, PATH).await,
        server
            .put(&tenant, PATH, r#"{"deny": ["203.0.113.2"]}"#)
            .await,
        server.delete(&tenant, PATH).await,
    ];
    for r in requests {
        let (status, e, _) = api_error(r).await;
        assert_eq!((status, e.code.as_str()), (403, "forbidden"));
        assert!(e.message.contains("admin token"), "{}", e.message);
    }
    let admin = server.token("ops", true).await;
    let (status, e, _) = api_error(server.get(&admin, PATH).await).await;
    assert_eq!(
        (status, e.code.as_str()),
        (404, "not_found"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn bad_policies_are_refused_naming_the_field_and_the_fix() {
    let server = server(ServerConfig::default()).await;
    let admin = server.token("ops", true).await;
    let cases = [
        (
            PATH,
            r#"{"deny": ["10.20.0.1/16"]}"#,
            "network_policy.deny: \"10.20.0.1/16\" has host bits set: write 10.20.0.0/16",
        ),
        (
            PATH,
            r#"{"allow": ["nope"]}"#,
            "network_policy.allow: \"nope\" is not an IPv4 network",
        ),
        (
            PATH,
            r#"{"allow": ["127.0.0.0/8"]}"#,
            "127.0.0.0/8 is within loopback",
        ),
        (
            PATH,
            r#"{"bandwidth_kbit": 1}"#,
            "network_policy.bandwidth_kbit: 1; give 64 to 10000000",
        ),
        (
            PATH,
            r#"{"allow_domains": ["not a name"]}"#,
            "network_policy.allow_domains",
        ),
        (PATH, r#"{"colour": "red"}"#, "colour"),
        ("/v1/tenants/Bad..Tenant/network-policy", "{}", "tenant"),
    ];
    for (path, body, says) in cases {
        let (status, e, _) = api_error(server.put(&admin, path, body).await).await;
        assert_eq!(status, 400, "{path} {body}: {}", e.message);
        assert!(e.message.contains(says), "{path} {body}: {}", e.message);
    }
    let (status, _, _) = api_error(server.get(&admin, PATH).await).await;
    assert_eq!(status, 404, "nothing refused was stored");
}

#[tokio::test]
async fn a_policy_is_stored_normalized_shown_and_removed() {
    let server = server(ServerConfig::default()).await;
    let admin = server.token("ops", true).await;
    let body = r#"{"allow": ["10.20.0.0/16", "203.0.113.0/24"], "deny": ["203.0.113.9"], "bandwidth_kbit": 8000}"#;
    let put: TenantNetworkPolicy = ok_json(server.put(&admin, PATH, body).await).await;
    assert_eq!(put.tenant.as_str(), "team-a");
    assert_eq!(
        put.policy.deny,
        ["203.0.113.9/32"],
        "an address is kept as its /32"
    );
    assert_eq!(put.policy.bandwidth_kbit, Some(8000));
    let got: TenantNetworkPolicy = ok_json(server.get(&admin, PATH).await).await;
    assert_eq!(got, put);
    let other = "/v1/tenants/team-b/network-policy";
    let (status, _, _) = api_error(server.get(&admin, other).await).await;
    assert_eq!(status, 404, "another tenant's is its own");
    let removed: TenantNetworkPolicy = ok_json(server.delete(&admin, PATH).await).await;
    assert_eq!(removed, put);
    let (status, _, _) = api_error(server.delete(&admin, PATH).await).await;
    assert_eq!(status, 404);
}
