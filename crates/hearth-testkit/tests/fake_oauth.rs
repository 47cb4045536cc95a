//! The fake OAuth provider over real sockets: the whole code flow with
//! PKCE, from a plain test and from a tokio test, and every refusal a
//! strict provider makes (bad authorization parameters, a wrong verifier,
//! a wrong client or redirect, a code used twice). The client is a few
//! lines of HTTP/1.1 over a `TcpStream`, so the `Host` header is whatever
//! the test says.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use hearth_testkit::fake_oauth::{s256, FakeOAuth, AUTHORIZE_TITLE};

const NAME: &str = "auth.fake-provider.test";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const REDIRECT: &str = "http://localhost:1455/auth/callback";

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn http(addr: SocketAddr, method: &str, target: &str, body: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {NAME}:{}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        addr.port(),
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn authorize_params(challenge: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", "app_fake".into()),
        ("redirect_uri", REDIRECT.into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
        ("state", "st-1".into()),
        ("scope", "openid profile email offline_access".into()),
    ]
}

fn as_pairs<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    params.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Approves and returns the code from the redirect.
fn approve(fake: &FakeOAuth, params: &[(&'static str, String)]) -> String {
    let answer = http(
        fake.addr(),
        "POST",
        "/oauth/approve",
        &query(&as_pairs(params)),
    );
    assert_eq!(answer.status, 302, "{}", answer.body);
    let location = answer.header("location").unwrap();
    let rest = location.strip_prefix(&format!("{REDIRECT}?code=")).unwrap();
    let (code, state) = rest.split_once("&state=").unwrap();
    assert_eq!(state, "st-1");
    code.to_owned()
}

fn token(fake: &FakeOAuth, code: &str, verifier: &str, redirect: &str, client: &str) -> Answer {
    let body = query(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", redirect),
        ("client_id", client),
    ]);
    http(fake.addr(), "POST", "/oauth/token", &body)
}

fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_str(&answer.body).unwrap()
}

#[test]
fn the_code_flow_with_pkce_issues_fresh_tokens_once_per_code() {
    let fake = FakeOAuth::start().unwrap();
    let params = authorize_params(&s256(VERIFIER));
    let page = http(
        fake.addr(),
        "GET",
        &format!("/oauth/authorize?{}", query(&as_pairs(&params))),
        "",
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(AUTHORIZE_TITLE), "{}", page.body);
    assert!(page.body.contains("action=\"/oauth/approve\""));
    assert!(page.body.contains(&format!("value=\"{REDIRECT}\"")));
    assert_eq!(fake.pages_served(), 1);

    let code = approve(&fake, &params);
    let answer = token(&fake, &code, VERIFIER, REDIRECT, "app_fake");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let tokens = json(&answer);
    let issued = fake.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(tokens["access_token"], issued[0].access_token);
    assert_eq!(tokens["refresh_token"], issued[0].refresh_token);
    assert_eq!(tokens["id_token"], issued[0].id_token);
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    let debug = format!("{:?}", issued[0]);
    for secret in issued[0].secrets() {
        assert!(!debug.contains(secret), "Debug shows a token: {debug}");
    }

    // Single use: the same code again is refused.
    let again = token(&fake, &code, VERIFIER, REDIRECT, "app_fake");
    assert_eq!(again.status, 400);
    assert_eq!(json(&again)["error"], "invalid_grant");

    // A second grant gets other tokens.
    let code = approve(&fake, &params);
    assert_eq!(
        token(&fake, &code, VERIFIER, REDIRECT, "app_fake").status,
        200
    );
    let issued = fake.issued();
    assert_ne!(issued[0].access_token, issued[1].access_token);
    assert_ne!(issued[0].refresh_token, issued[1].refresh_token);
    assert_eq!(
        (fake.approvals(), fake.token_grants(), fake.token_failures()),
        (2, 2, 1)
    );
    let hosts = fake.hosts_seen();
    assert_eq!(hosts.len(), 6);
    assert!(
        hosts
            .iter()
            .all(|h| *h == format!("{NAME}:{}", fake.addr().port())),
        "{hosts:?}"
    );
}

#[test]
fn token_requests_that_do_not_match_their_code_are_refused() {
    let fake = FakeOAuth::start().unwrap();
    let params = authorize_params(&s256(VERIFIER));
    let wrong_verifier = "x".repeat(43);
    for (verifier, redirect, client, what) in [
        (
            wrong_verifier.as_str(),
            REDIRECT,
            "app_fake",
            "code_verifier",
        ),
        (
            VERIFIER,
            "http://localhost:1456/auth/callback",
            "app_fake",
            "redirect_uri",
        ),
        (VERIFIER, REDIRECT, "other_app", "client_id"),
    ] {
        let code = approve(&fake, &params);
        let answer = token(&fake, &code, verifier, redirect, client);
        assert_eq!(answer.status, 400, "{what}");
        let error = json(&answer);
        assert_eq!(error["error"], "invalid_grant", "{what}: {error}");
        assert!(
            error["error_description"].as_str().unwrap().contains(what),
            "{error}"
        );
        // The code is used up by the failed attempt.
        let retry = token(&fake, &code, VERIFIER, REDIRECT, "app_fake");
        assert_eq!(json(&retry)["error"], "invalid_grant");
    }
    let missing = http(
        fake.addr(),
        "POST",
        "/oauth/token",
        "grant_type=authorization_code",
    );
    let error = json(&missing);
    assert_eq!(error["error"], "invalid_request");
    assert!(
        error["error_description"]
            .as_str()
            .unwrap()
            .contains("`code`"),
        "{error}"
    );
    let other = http(fake.addr(), "POST", "/oauth/token", "grant_type=password");
    assert_eq!(json(&other)["error"], "unsupported_grant_type");
    assert!(fake.issued().is_empty());
    assert_eq!(fake.token_failures(), 8);
}

#[test]
fn bad_authorization_requests_get_a_page_naming_the_parameter() {
    let fake = FakeOAuth::start().unwrap();
    let good = authorize_params(&s256(VERIFIER));
    for (param, value) in [
        ("redirect_uri", "https://evil.test/cb"),
        ("redirect_uri", "http://localhost/cb"),
        ("code_challenge_method", "plain"),
        ("code_challenge", "short"),
        ("response_type", "token"),
        ("state", ""),
        ("client_id", ""),
    ] {
        let mut params = good.clone();
        params.iter_mut().find(|(k, _)| *k == param).unwrap().1 = value.to_owned();
        for (method, target, body) in [
            (
                "GET",
                format!("/oauth/authorize?{}", query(&as_pairs(&params))),
                String::new(),
            ),
            (
                "POST",
                "/oauth/approve".to_owned(),
                query(&as_pairs(&params)),
            ),
        ] {
            let answer = http(fake.addr(), method, &target, &body);
            assert_eq!(answer.status, 400, "{param}={value}");
            assert!(
                answer.body.contains(&format!("`{param}`")),
                "{param}: {}",
                answer.body
            );
        }
    }
    assert_eq!((fake.pages_served(), fake.approvals()), (0, 0));
}

#[tokio::test]
async fn it_serves_from_inside_a_tokio_test_and_stops_on_drop() {
    let fake = FakeOAuth::start().unwrap();
    let addr = fake.addr();
    let params = authorize_params(&s256(VERIFIER));
    let target = format!("/oauth/authorize?{}", query(&as_pairs(&params)));
    let page = tokio::task::spawn_blocking(move || http(addr, "GET", &target, ""))
        .await
        .unwrap();
    assert_eq!(page.status, 200);
    drop(fake);
    let refused = tokio::task::spawn_blocking(move || {
        for _ in 0..50 {
            if TcpStream::connect(addr).is_err() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    });
    assert!(refused.await.unwrap(), "still listening after drop");
}
