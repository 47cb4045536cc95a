//! `hearth vault status|rotate|retire`: the key ring that seals users'
//! credentials, managed straight on the data directory (its key file and
//! its store), like `hearth token create`, so it works with or without a
//! running server; a running server reads the key file again on every
//! seal and open, so a rotation counts at once. Nothing here prints a key
//! or a credential: only versions, dates and counts.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use hearth_guestkit::DataDir;
use hearth_store::SqliteStore;
use hearth_vault::{KeyFile, Vault, VaultStatus};

use crate::cli::KeyFileArgs;

pub fn status(data: &DataDir, keys: KeyFileArgs, json: bool) -> anyhow::Result<ExitCode> {
    let status = block_on(vault(data, keys)?.status())??;
    if json {
        println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
    } else {
        print!("{}", status_table(&status));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rotate(data: &DataDir, keys: KeyFileArgs) -> anyhow::Result<ExitCode> {
    let vault = vault(data, keys)?;
    let rotation = block_on(vault.rotate())??;
    println!(
        "KEK version {} is active in {}; {} credential versions rewrapped under it",
        rotation.kek_version,
        vault.key_file().path().display(),
        rotation.rewrapped
    );
    eprintln!(
        "hearth: older versions can now be retired (`hearth vault retire VERSION`); back up the \
         key file first"
    );
    Ok(ExitCode::SUCCESS)
}

pub fn retire(data: &DataDir, keys: KeyFileArgs, version: u32) -> anyhow::Result<ExitCode> {
    let vault = vault(data, keys)?;
    block_on(vault.retire(version))??;
    println!(
        "KEK version {version} is retired in {}: its key is destroyed",
        vault.key_file().path().display()
    );
    Ok(ExitCode::SUCCESS)
}

fn vault(data: &DataDir, keys: KeyFileArgs) -> anyhow::Result<Vault> {
    let store_file = data.store_file();
    let store = SqliteStore::open(&store_file)
        .with_context(|| format!("could not open the store {}", store_file.display()))?;
    let keys = match keys.key_file {
        Some(path) => KeyFile::provided(path),
        None => KeyFile::in_data_dir(data.root()),
    };
    Ok(Vault::new(keys, Arc::new(store)))
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(f))
}

/// `VERSION STATE CREATED RETIRED CREDENTIALS`, and what needs doing.
fn status_table(s: &VaultStatus) -> String {
    let mut out = format!("key file {}\n", s.path.display());
    let Some(active) = s.active else {
        let _ = writeln!(
            out,
            "no key file yet: hearth makes it at the first capture (or `hearth vault rotate`)"
        );
        orphans(&mut out, s);
        return out;
    };
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:<24}  {:<24}  CREDENTIALS",
        "VERSION", "STATE", "CREATED", "RETIRED"
    );
    for v in &s.versions {
        let state = match (v.version == active, v.retired_at) {
            (true, _) => "active",
            (false, Some(_)) => "retired",
            (false, None) => "old",
        };
        let retired = v.retired_at.map_or("-".to_owned(), |t| t.to_string());
        let _ = writeln!(
            out,
            "{:<8} {state:<8} {:<24}  {retired:<24}  {}",
            v.version,
            v.created_at.to_string(),
            v.credentials
        );
    }
    orphans(&mut out, s);
    out
}

fn orphans(out: &mut String, s: &VaultStatus) {
    for (version, count) in &s.orphaned {
        let _ = writeln!(
            out,
            "warning: {count} credential versions are wrapped under KEK version {version}, which \
             the key file does not have: restore the key file that has it, or delete them"
        );
    }
}

fn status_json(s: &VaultStatus) -> serde_json::Value {
    let versions: Vec<_> = s
        .versions
        .iter()
        .map(|v| {
            serde_json::json!({
                "version": v.version,
                "active": Some(v.version) == s.active,
                "created_at": v.created_at,
                "retired_at": v.retired_at,
                "credentials": v.credentials,
            })
        })
        .collect();
    serde_json::json!({
        "key_file": s.path,
        "active": s.active,
        "versions": versions,
        "orphaned": s.orphaned.iter().map(|(v, n)| serde_json::json!({"kek_version": v, "credentials": n})).collect::<Vec<_>>(),
    })
}
