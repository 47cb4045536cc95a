//! Bad input to `hearth pool`, `hearth serve --pool` and a token for the
//! pool's reserved tenant: each is refused before anything is sent or
//! stored, naming the problem and what to give instead.

mod common;

use common::*;

fn refused(args: &[&str], needle: &str) {
    let out = hearth(args)
        .env("HEARTH_URL", "http://127.0.0.1:9")
        .env("HEARTH_TOKEN", "hth_00000000_unused")
        .output()
        .expect("hearth runs");
    assert!(!out.status.success(), "{args:?} succeeded: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(needle),
        "{args:?}: stderr lacks {needle:?}:\n{}",
        text(&out)
    );
    assert!(!stderr.contains("panicked"), "{}", text(&out));
}

#[test]
fn pool_settings_out_of_range_are_refused_before_any_request() {
    refused(
        &["pool", "set", "minimal", "--size", "3", "--max", "2"],
        "size may not exceed max",
    );
    refused(
        &["pool", "set", "minimal", "--size", "1", "--ttl", "1"],
        "ttl_secs is 1",
    );
}

#[test]
fn serve_pool_wants_image_equals_size() {
    refused(&["serve", "--pool", "browser"], "IMAGE=SIZE");
    refused(&["serve", "--pool", "browser=many"], "not a number of VMs");
}

#[test]
fn no_token_is_made_for_the_pools_reserved_tenant() {
    refused(
        &["token", "create", "--tenant", "_pool"],
        "reserved for hearth",
    );
}
