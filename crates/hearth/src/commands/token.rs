//! `hearth token create|list|revoke`. `create` mints an API token straight
//! into the store, so the first token can exist before any client can
//! authenticate; the secret is printed once, alone on stdout, and only its
//! hash is stored. `list` and `revoke` are clients of the admin API
//! (`/v1/tokens`), so they work from anywhere the server is reachable and
//! take effect on the running server at once.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use hearth_guestkit::DataDir;
use hearth_store::{SqliteStore, Store};
use hearth_types::api::TokenInfo;
use hearth_types::{TenantId, Timestamp};

use super::client::Client;
use crate::cli::ApiArgs;

pub fn create(
    data: &DataDir,
    tenant: TenantId,
    admin: bool,
    expires_in: Option<u64>,
) -> anyhow::Result<ExitCode> {
    if tenant.is_reserved() {
        anyhow::bail!(
            "tenant {tenant} is reserved for hearth itself (names starting with `_`; `_pool` owns \
             pooled VMs): give the token another tenant"
        );
    }
    let store_file = data.store_file();
    let store = SqliteStore::open(&store_file)
        .with_context(|| format!("could not open the store {}", store_file.display()))?;
    let (secret, mut record) = hearth_server::mint_token(tenant, admin);
    record.expires_at = expires_in.map(|secs| record.created_at.plus(Duration::from_secs(secs)));
    tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(store.insert_token(&record))
        .context("could not store the token")?;
    println!("{secret}");
    let scope = if record.admin {
        "an admin token (sees every tenant)".to_owned()
    } else {
        format!("a token for tenant {}", record.tenant)
    };
    let expiry = match record.expires_at {
        Some(at) => format!(", expiring at {at}"),
        None => String::new(),
    };
    eprintln!(
        "hearth: created {scope}, id {}{expiry}, in {}. It is shown only this once: \
         export it as HEARTH_TOKEN for `hearth vm ...`",
        record.id,
        store_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn list(api: &ApiArgs, json: bool) -> anyhow::Result<ExitCode> {
    let tokens: Vec<TokenInfo> = Client::new(api)?.get("/v1/tokens")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tokens)?);
    } else {
        print!("{}", token_table(&tokens, Timestamp::now()));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn revoke(api: &ApiArgs, id: &str) -> anyhow::Result<ExitCode> {
    if !looks_like_id(id) {
        anyhow::bail!(
            "{:?} is not a token id: give the id `hearth token list` shows \
             (`hth_` and 8 hex digits), never the whole token",
            shown_id(id)
        );
    }
    let revoked: TokenInfo = Client::new(api)?.delete(&format!("/v1/tokens/{id}"))?;
    eprintln!(
        "hearth: revoked token {} of tenant {}: it is refused from now on",
        revoked.id, revoked.tenant
    );
    Ok(ExitCode::SUCCESS)
}

/// Whether `id` could be a token id. Anything longer might be a whole
/// token pasted by mistake: it is never sent, nor echoed whole.
fn looks_like_id(id: &str) -> bool {
    id.len() == 12 && id.starts_with("hth_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The start of what was given instead of an id: enough to recognise, not
/// enough to be a secret.
fn shown_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// `ID TENANT ADMIN CREATED EXPIRES LAST USED`, one token per line; an
/// expired token says so.
fn token_table(tokens: &[TokenInfo], now: Timestamp) -> String {
    if tokens.is_empty() {
        return "no tokens: create one with `hearth token create`\n".to_owned();
    }
    let mut out = format!(
        "{:<12}  {:<16} {:<5}  {:<24}  {:<32}  LAST USED\n",
        "ID", "TENANT", "ADMIN", "CREATED", "EXPIRES"
    );
    for t in tokens {
        let expires = match t.expires_at {
            Some(at) if at <= now => format!("{at} (expired)"),
            Some(at) => at.to_string(),
            None => "never".to_owned(),
        };
        let used = t
            .last_used_at
            .map_or("never".to_owned(), |at| at.to_string());
        let _ = writeln!(
            out,
            "{:<12}  {:<16} {:<5}  {:<24}  {expires:<32}  {used}",
            t.id,
            t.tenant.as_str(),
            if t.admin { "yes" } else { "no" },
            t.created_at.to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, expires_at: Option<i64>, used: Option<i64>) -> TokenInfo {
        TokenInfo {
            id: id.into(),
            tenant: "team-a".parse().unwrap(),
            admin: false,
            created_at: Timestamp::from_millis(0),
            expires_at: expires_at.map(Timestamp::from_millis),
            last_used_at: used.map(Timestamp::from_millis),
        }
    }

    #[test]
    fn the_table_shows_expiry_and_last_use_in_words() {
        let now = Timestamp::from_millis(10_000);
        let table = token_table(
            &[
                token("hth_0000000a", None, None),
                token("hth_0000000b", Some(5_000), Some(4_000)),
            ],
            now,
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID") && lines[0].ends_with("LAST USED"));
        assert!(lines[1].contains("never") && lines[1].contains("team-a"));
        assert!(
            lines[2].contains("1970-01-01T00:00:05Z (expired)"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with("1970-01-01T00:00:04Z"), "{}", lines[2]);
        assert!(token_table(&[], now).contains("hearth token create"));
    }

    #[test]
    fn only_ids_are_sent_to_revoke_and_a_whole_token_is_not_echoed() {
        assert!(looks_like_id("hth_0123abcd"));
        let whole = format!("hth_0123abcd_{}", "f".repeat(64));
        for bad in [whole.as_str(), "hth_0123", "0123abcd", "hth_0123abcz"] {
            assert!(!looks_like_id(bad), "{bad:?}");
        }
        assert_eq!(shown_id(&whole), "hth_0123abcd");
    }
}
