//! `hearth snapshot create|list|show|rm`: snapshots through the API
//! (docs/snapshots.md). A VM is restored from one with `hearth vm create
//! --from-snapshot NAME`.

use std::process::ExitCode;
use std::time::Duration;

use hearth_types::snapshot::{CreateSnapshot, Snapshot};
use hearth_types::{SnapshotName, VmId};

use super::client::Client;
use crate::cli::ApiArgs;

/// A template boots its image first: minutes under TCG for a big one.
const CREATE_WAIT: Duration = Duration::from_secs(600);

pub fn create(
    api: &ApiArgs,
    name: SnapshotName,
    vm: Option<VmId>,
    image: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let body = CreateSnapshot { name, vm, image };
    let client = Client::new(api)?.with_answer_timeout(CREATE_WAIT);
    let snap: Snapshot = client.post("/v1/snapshots", Some(&body))?;
    print_one(&snap, json)
}

pub fn list(api: &ApiArgs, json: bool) -> anyhow::Result<ExitCode> {
    let snaps: Vec<Snapshot> = Client::new(api)?.get("/v1/snapshots")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&snaps)?);
    } else if snaps.is_empty() {
        println!("no snapshots: take one with `hearth snapshot create NAME --vm ID`");
    } else {
        println!(
            "{:<24} {:<10} {:>5} {:>8} {:>10}  CREATED",
            "NAME", "IMAGE", "VCPUS", "MEM MiB", "DISK MiB"
        );
        for s in &snaps {
            let m = &s.manifest;
            println!(
                "{:<24} {:<10} {:>5} {:>8} {:>10}  {}",
                s.name,
                m.image,
                m.vcpus,
                m.memory_mib,
                s.disk_bytes >> 20,
                s.created_at
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(api: &ApiArgs, name: &SnapshotName, json: bool) -> anyhow::Result<ExitCode> {
    let snap: Snapshot = Client::new(api)?.get(&format!("/v1/snapshots/{name}"))?;
    print_one(&snap, json)
}

pub fn rm(api: &ApiArgs, name: &SnapshotName) -> anyhow::Result<ExitCode> {
    let snap: Snapshot = Client::new(api)?.delete(&format!("/v1/snapshots/{name}"))?;
    eprintln!("hearth: removed snapshot {} and its files", snap.name);
    Ok(ExitCode::SUCCESS)
}

fn print_one(s: &Snapshot, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(ExitCode::SUCCESS);
    }
    let m = &s.manifest;
    println!(
        "snapshot {}\n  of        {}{}\n  image     {}\n  size      {} vCPU, {} MiB\n  kernel    {}\n  \
         hypervisor {}\n  machine   {}\n  devices   {}\n  disk      {} MiB\n  created   {}",
        s.name,
        m.source_vm,
        if m.template { " (a template: no VM configuration)" } else { "" },
        m.image,
        m.vcpus,
        m.memory_mib,
        m.kernel.path.display(),
        m.hypervisor,
        m.machine,
        m.devices.join(", "),
        s.disk_bytes >> 20,
        s.created_at
    );
    Ok(ExitCode::SUCCESS)
}
