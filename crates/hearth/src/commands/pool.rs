//! `hearth pool`: warm pools through `hearth serve`'s admin API.

use std::process::ExitCode;

use hearth_types::pool::{Pool, PoolSpec, PoolVmState};

use super::client::Client;
use crate::cli::ApiArgs;

pub fn set(api: &ApiArgs, image: &str, spec: &PoolSpec) -> anyhow::Result<ExitCode> {
    spec.settings().map_err(|e| anyhow::anyhow!("{e}"))?;
    let pool: Pool = Client::new(api)?.put(&format!("/v1/pools/{image}"), spec)?;
    let s = pool.settings;
    let made = s
        .template
        .map_or("booted cold".to_owned(), |t| format!("restored from {t}"));
    eprintln!(
        "hearth: pool {image}: {} waiting (at most {} at once), {made}, replaced after {} s, {} boots/min; it fills in the background",
        s.size, s.max, s.ttl_secs, s.refill_per_min
    );
    Ok(ExitCode::SUCCESS)
}

pub fn list(api: &ApiArgs, json: bool) -> anyhow::Result<ExitCode> {
    let pools: Vec<Pool> = Client::new(api)?.get("/v1/pools")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&pools)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(&pools));
    Ok(ExitCode::SUCCESS)
}

pub fn show(api: &ApiArgs, image: &str, json: bool) -> anyhow::Result<ExitCode> {
    let pool: Pool = Client::new(api)?.get(&format!("/v1/pools/{image}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&pool)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(std::slice::from_ref(&pool)));
    for vm in &pool.vms {
        println!(
            "  {}  {:<8} since {}  expires {}",
            vm.id,
            vm.state.as_str(),
            vm.created_at,
            vm.expires_at.map_or("-".to_owned(), |t| t.to_string())
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rm(api: &ApiArgs, image: &str) -> anyhow::Result<ExitCode> {
    let pool: Pool = Client::new(api)?.delete(&format!("/v1/pools/{image}"))?;
    eprintln!(
        "hearth: pool {image} removed; its {} VMs are being destroyed",
        pool.vms.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `IMAGE SIZE MAX TTL REFILL WAITING BOOTING HANDED-OUT TEMPLATE`, one
/// pool a line.
fn table(pools: &[Pool]) -> String {
    let mut out = format!(
        "{:<16} {:>4} {:>4} {:>7} {:>6} {:>7} {:>7} {:>10} {}\n",
        "IMAGE", "SIZE", "MAX", "TTL", "REFILL", "WAITING", "BOOTING", "HANDED-OUT", "TEMPLATE"
    );
    for p in pools {
        let n = |s: PoolVmState| p.vms.iter().filter(|v| v.state == s).count();
        out.push_str(&format!(
            "{:<16} {:>4} {:>4} {:>6}s {:>4}/m {:>7} {:>7} {:>10} {}\n",
            p.image,
            p.settings.size,
            p.settings.max,
            p.settings.ttl_secs,
            p.settings.refill_per_min,
            n(PoolVmState::Waiting),
            n(PoolVmState::Booting),
            p.handed_out,
            p.settings.template.as_ref().map_or("-", |t| t.as_str())
        ));
    }
    out
}
