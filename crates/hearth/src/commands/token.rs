//! `hearth token create`: mints an API token straight into the store, so
//! the first token can exist before any client can authenticate. The
//! secret is printed once, alone on stdout; only its hash is stored.

use std::process::ExitCode;

use anyhow::Context;
use hearth_guestkit::DataDir;
use hearth_store::{SqliteStore, Store};
use hearth_types::TenantId;

pub fn create(data: &DataDir, tenant: TenantId, admin: bool) -> anyhow::Result<ExitCode> {
    let store_file = data.store_file();
    let store = SqliteStore::open(&store_file)
        .with_context(|| format!("could not open the store {}", store_file.display()))?;
    let (secret, record) = hearth_server::mint_token(tenant, admin);
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
    eprintln!(
        "hearth: created {scope}, id {}, in {}. It is shown only this once: \
         export it as HEARTH_TOKEN for `hearth vm ...`",
        record.id,
        store_file.display()
    );
    Ok(ExitCode::SUCCESS)
}
