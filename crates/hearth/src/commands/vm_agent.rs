//! `hearth vm health|report|logs --service|cp`: what a VM's guest agent
//! reported, and files in and out of the VM, through `hearth serve`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use hearth_types::api::{
    FileWritten, ServiceHealth, ServiceLogs, VmBootReport, VmHealth, VmNetworkInfo,
};
use hearth_types::VmId;
use sha2::{Digest, Sha256};

use super::client::Client;
use crate::cli::ApiArgs;

/// The most `cp` reads back from the server (its bound is lower).
const MAX_COPY: u64 = 1 << 30;
/// Copies of large files through a slow guest take a while.
const COPY_WAIT: Duration = Duration::from_secs(600);
/// The header carrying a read file's SHA-256.
const SHA256_HEADER: &str = "x-hearth-sha256";

pub fn health(api: &ApiArgs, id: &VmId, json: bool) -> anyhow::Result<ExitCode> {
    let h: VmHealth = Client::new(api)?.get(&format!("/v1/vms/{id}/health"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&h)?);
    } else {
        print!("{}", describe_health(&h));
    }
    Ok(ExitCode::SUCCESS)
}

/// `hearth vm network ID`.
pub fn network(api: &ApiArgs, id: &VmId, json: bool) -> anyhow::Result<ExitCode> {
    let n: VmNetworkInfo = Client::new(api)?.get(&format!("/v1/vms/{id}/network"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&n)?);
    } else {
        println!("address: {} via {} ({})", n.address, n.gateway, n.mac);
        println!("refused: {} packets", n.refused_packets);
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_health(h: &VmHealth) -> String {
    let mut out = String::new();
    let agent = match (&h.agent.agent_version, h.agent.connected) {
        (None, _) => "never connected".to_owned(),
        (Some(v), true) => format!("connected (hearth-agent {v})"),
        (Some(v), false) => format!("not connected (last: hearth-agent {v})"),
    };
    let _ = writeln!(out, "agent:     {agent}");
    if let Some(t) = h.agent.last_heartbeat {
        let _ = writeln!(out, "heartbeat: {t}");
    }
    let _ = writeln!(out, "ready:     {}", if h.ready { "yes" } else { "no" });
    if let Some(e) = &h.config_error {
        let _ = writeln!(out, "config:    failed: {e}");
    }
    if !h.services.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<16} {:<14} {:>8}  {:<5}  LAST EXIT",
            "SERVICE", "STATE", "RESTARTS", "READY"
        );
        for s in &h.services {
            let _ = writeln!(out, "{}", service_row(s));
        }
    }
    out
}

fn service_row(s: &ServiceHealth) -> String {
    let exit = match &s.last_exit {
        Some(e) => format!("{} at {}", e.status, e.at),
        None => "-".to_owned(),
    };
    let mut row = format!(
        "{:<16} {:<14} {:>8}  {:<5}  {exit}",
        s.name,
        s.state.as_str(),
        s.restarts,
        if s.ready { "yes" } else { "no" }
    );
    if s.crash_loop {
        row.push_str("  (crash loop)");
    }
    if let Some(e) = &s.spawn_error {
        let _ = write!(row, "  could not start: {e}");
    }
    row
}

pub fn report(api: &ApiArgs, id: &VmId, json: bool) -> anyhow::Result<ExitCode> {
    let r: VmBootReport = Client::new(api)?.get(&format!("/v1/vms/{id}/boot-report"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let b = &r.report;
    println!("reported:  {}", r.at);
    println!("kernel:    {}", b.kernel);
    println!(
        "agent up:  {} ms after the kernel started",
        b.agent_started_ms
    );
    println!(
        "memory:    {} of {} KiB available",
        b.memory_available_kib, b.memory_total_kib
    );
    for d in &b.disks {
        println!(
            "disk:      {} {} of {} KiB available",
            d.mount, d.available_kib, d.total_kib
        );
    }
    for i in &b.interfaces {
        let state = if i.up { "up" } else { "down" };
        println!("interface: {} {state} {}", i.name, i.addresses.join(" "));
    }
    if !b.listening.is_empty() {
        println!("listening: {}", b.listening.join(" "));
    }
    for u in &b.failed_units {
        println!("failed:    {}", u.unit);
        for l in &u.last_lines {
            println!("           {l}");
        }
    }
    for j in &b.waiting_jobs {
        println!("waiting:   {j}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn service_logs(
    api: &ApiArgs,
    id: &VmId,
    service: &str,
    lines: usize,
) -> anyhow::Result<ExitCode> {
    let path = format!(
        "/v1/vms/{id}/services/{}/logs?tail={lines}",
        encode(service)
    );
    let logs: ServiceLogs = Client::new(api)?.get(&path)?;
    if logs.lines.is_empty() {
        eprintln!(
            "hearth: no output stored for service {service:?} of VM {id} (`hearth vm health {id}` lists its services)"
        );
    }
    let mut out = std::io::stdout().lock();
    for l in &logs.lines {
        writeln!(out, "{} {} {}", l.at, l.stream.as_str(), l.line)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Place<'a> {
    Local(&'a str),
    Guest(VmId, &'a str),
}

/// `ID:/path` is in a VM (the id must parse and the path be absolute);
/// anything else is local.
fn place(arg: &str) -> Place<'_> {
    if let Some((id, path)) = arg.split_once(':') {
        if let (Ok(id), true) = (id.parse::<VmId>(), path.starts_with('/')) {
            return Place::Guest(id, path);
        }
    }
    Place::Local(arg)
}

pub fn cp(api: &ApiArgs, from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(api)?.with_answer_timeout(COPY_WAIT);
    match (place(from), place(to)) {
        (Place::Local(local), Place::Guest(id, path)) => put(&client, local, &id, path),
        (Place::Guest(id, path), Place::Local(local)) => get(&client, &id, path, local),
        _ => anyhow::bail!(
            "give one local path and one ID:/absolute/path in a VM, e.g. `hearth vm cp ./app vm-3f9a1c2b7d4e:/usr/local/bin/app`"
        ),
    }
}

fn put(client: &Client, local: &str, id: &VmId, path: &str) -> anyhow::Result<ExitCode> {
    let data = std::fs::read(local).map_err(|e| anyhow::anyhow!("could not read {local}: {e}"))?;
    let ours = hex::encode(Sha256::digest(&data));
    let url = format!("/v1/vms/{id}/files?path={}", encode(path));
    let written: FileWritten = client.put_bytes(&url, &data)?;
    if written.sha256 != ours || written.size != data.len() as u64 {
        anyhow::bail!(
            "the copy in the VM differs from {local} (SHA-256 {} there, {ours} here): copy it again",
            written.sha256
        );
    }
    eprintln!("{} bytes, sha256 {ours}", written.size);
    Ok(ExitCode::SUCCESS)
}

fn get(client: &Client, id: &VmId, path: &str, local: &str) -> anyhow::Result<ExitCode> {
    let url = format!("/v1/vms/{id}/files?path={}", encode(path));
    let (data, theirs) = client.get_bytes(&url, MAX_COPY, SHA256_HEADER)?;
    let ours = hex::encode(Sha256::digest(&data));
    if theirs.as_deref() != Some(ours.as_str()) {
        anyhow::bail!(
            "the bytes received differ from the file in the VM (SHA-256 {} there, {ours} here): copy it again",
            theirs.as_deref().unwrap_or("not given")
        );
    }
    write_atomically(Path::new(local), &data)?;
    eprintln!("{} bytes, sha256 {ours}", data.len());
    Ok(ExitCode::SUCCESS)
}

/// Writes beside `path` and renames, so a failed copy leaves no half file.
fn write_atomically(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow::anyhow!("{} names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".hearth-cp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::anyhow!("could not write {}: {e}", path.display())
        })
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_places_are_a_vm_path_or_local() {
        let id: VmId = "vm-3f9a1c2b7d4e".parse().unwrap();
        assert_eq!(place("vm-3f9a1c2b7d4e:/etc/x"), Place::Guest(id, "/etc/x"));
        assert_eq!(place("./a:b"), Place::Local("./a:b"));
        assert_eq!(
            place("vm-3f9a1c2b7d4e:rel"),
            Place::Local("vm-3f9a1c2b7d4e:rel")
        );
    }

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(encode("/tmp/a b&c=d"), "/tmp/a%20b%26c%3Dd");
    }
}

#[cfg(test)]
mod health_tests {
    use hearth_types::guest::{ExitStatus, ServiceState};

    use super::*;

    fn service(name: &str, restarts: u32) -> ServiceHealth {
        ServiceHealth {
            name: name.into(),
            state: ServiceState::CrashLooping,
            restarts,
            last_exit: Some(hearth_types::api::ServiceExit {
                status: ExitStatus {
                    code: Some(3),
                    signal: None,
                },
                at: hearth_types::Timestamp::from_millis(0),
            }),
            ready: false,
            crash_loop: true,
            spawn_error: None,
        }
    }

    #[test]
    fn the_service_table_lines_up_under_its_header() {
        let h = VmHealth {
            vm: "vm-0123456789ab".parse().unwrap(),
            agent: Default::default(),
            ready: false,
            config_error: None,
            services: vec![service("web", 12), service("a-longer-name", 3)],
        };
        let text = describe_health(&h);
        let lines: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("SERVICE"))
            .collect();
        let col = |line: &str, word: &str| line.find(word).unwrap();
        for row in &lines[1..] {
            assert_eq!(col(lines[0], "STATE"), col(row, "crash_looping"), "{text}");
            assert_eq!(col(lines[0], "LAST EXIT"), col(row, "exited"), "{text}");
        }
        assert!(lines[1].ends_with("(crash loop)"), "{text}");
    }
}
