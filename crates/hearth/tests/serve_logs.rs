//! `hearth serve --log-format json`: every line on stderr is one JSON
//! object with a level and a message, from the start to the clean stop
//! (and a failure to start is one too), and no token, good or bad, is in
//! any of them. No VM boots.

mod common;

use common::serve::Host;

/// Each line of `log` parsed; panics naming the first that is not a JSON
/// object with a `level` and a `message`.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n--- log\n{log}"));
            for key in ["timestamp", "level", "message", "target"] {
                assert!(v[key].is_string(), "no {key} in {line}");
            }
            v
        })
        .collect();
    assert!(!lines.is_empty(), "serve logged nothing");
    lines
}

#[test]
fn json_logs_are_one_object_per_line_and_carry_no_token() {
    let mut host = Host::new(&["--log-format", "json"]);
    host.start();
    let token = host.admin_token();
    let mut api = host.api();
    assert_eq!(api.call("GET", "/v1/vms", None).0, 200);
    let body = r#"{"image": "no-such-image"}"#;
    assert_eq!(api.call("POST", "/v1/vms", Some(body)).0, 400);
    // A wrong secret on a real token id: refused, and never logged.
    let forged = format!("{}_{}", &token[..12], "0".repeat(64));
    api.token = forged.clone();
    assert_eq!(api.call("GET", "/v1/vms", None).0, 401);
    let status = host.stop_serve();
    assert!(status.success(), "serve exited {status}");

    let log = host.serve_logs();
    let lines = json_lines(&log);
    let secret = &token[13..];
    assert!(!log.contains(secret), "a token's secret was logged:\n{log}");
    assert!(!log.contains(&forged[13..]), "a forged secret was logged");
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"serving"), "{messages:?}");
    let request = lines
        .iter()
        .find(|l| l["message"] == "request" && l["status"] == 401)
        .unwrap_or_else(|| panic!("no 401 request line:\n{log}"));
    assert_eq!(request["level"], "INFO");
    assert_eq!(request["route"], "/v1/vms", "{request}");
}

#[test]
fn a_serve_that_cannot_start_says_why_in_json() {
    let mut host = Host::new(&["--log-format", "json"]);
    host.start();
    // A second server on the same data directory is refused at once.
    let out = host
        .hearth(&["serve", "--log-format", "json", "--listen", "127.0.0.1:0"])
        .output()
        .expect("hearth runs");
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = json_lines(&stderr);
    let last = lines.last().expect("a line");
    assert_eq!(last["level"], "ERROR");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(error.contains("already serves"), "{last}");
    host.stop_serve();
}
