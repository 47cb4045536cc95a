//! `hearth vault status|rotate|retire` on a private data directory holding
//! sealed credentials (sealed in-process, as a login session will): the
//! versions and counts are shown, rotation rewraps, retirement is refused
//! while a version is in use, and no output ever holds a key or a secret.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use hearth_store::{CredentialOwner, SqliteStore};
use hearth_vault::{CredentialFile, CredentialFiles, KeyFile, Secret, Vault};

const SECRET: &str = "gho_CLI-SECRET-VALUE-0123456789";

fn hearth(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("HEARTH_VAULT_KEY_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("hearth runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Seals a credential for each user in `data`, the way the server will.
fn seal(data: &Path, users: &[&str]) {
    let store = Arc::new(SqliteStore::open(&data.join("hearth.db")).unwrap());
    let vault = Vault::new(KeyFile::in_data_dir(data), store);
    let files = CredentialFiles {
        files: vec![CredentialFile {
            path: ".config/gh/hosts.yml".to_owned(),
            mode: 0o600,
            contents: Secret::new(format!("oauth_token: {SECRET}\n").into_bytes()),
        }],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for user in users {
        let owner = CredentialOwner {
            tenant: "team-a".parse().unwrap(),
            user: user.parse().unwrap(),
            provider: "gh".parse().unwrap(),
        };
        rt.block_on(vault.seal(&owner, &files)).unwrap();
    }
}

/// The keys in the key file, base64, to look for in outputs.
fn keys(data: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(data.join("vault/keys.json")).unwrap();
    let ring: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = ring["keys"].as_array().unwrap();
    keys.iter()
        .filter_map(|k| k["key"].as_str().map(str::to_owned))
        .collect()
}

fn assert_no_secret(out: &Output, keys: &[String]) {
    let all = text(out);
    assert!(!all.contains(SECRET), "a secret is printed: {all}");
    for key in keys {
        assert!(!all.contains(key.as_str()), "a key is printed: {all}");
    }
}

#[test]
fn status_rotate_and_retire_show_versions_and_counts_never_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let out = hearth(data, &["vault", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no key file yet"), "{}", text(&out));

    seal(data, &["alice", "bob"]);
    let mut seen_keys = keys(data);
    let out = hearth(data, &["vault", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout.lines().find(|l| l.starts_with("1 ")).unwrap();
    assert!(
        line.contains("active") && line.trim_end().ends_with(" 2"),
        "{stdout}"
    );
    assert_no_secret(&out, &seen_keys);

    let out = hearth(data, &["vault", "rotate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("KEK version 2 is active")
            && text(&out).contains("2 credential versions rewrapped"),
        "{}",
        text(&out)
    );
    seen_keys.extend(keys(data));
    assert_no_secret(&out, &seen_keys);

    let out = hearth(data, &["vault", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["active"], 2);
    assert_eq!(status["versions"][0]["credentials"], 0);
    assert_eq!(status["versions"][1]["credentials"], 2);
    assert_no_secret(&out, &seen_keys);

    let out = hearth(data, &["vault", "retire", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("the active one"), "{}", text(&out));
    let out = hearth(data, &["vault", "retire", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret(&out, &seen_keys);
    let out = hearth(data, &["vault", "status"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout.lines().find(|l| l.starts_with("1 ")).unwrap();
    assert!(line.contains("retired"), "{stdout}");
}

#[test]
fn an_unknown_version_and_a_loose_key_file_are_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    seal(data, &["alice"]);
    // (Refusing a version still in use is shown in hearth-vault's tests,
    // which can put an old row back; here: an unknown version.)
    let out = hearth(data, &["vault", "retire", "7"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not in the key ring"), "{}", text(&out));
    let key_file = data.join("vault/keys.json");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = hearth(data, &["vault", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("chmod 600"), "{}", text(&out));
}
