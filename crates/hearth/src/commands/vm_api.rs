//! `hearth vm create|list|show|events|console|logs|why|hold|release|stop|start|rm`:
//! the CLI as a client of `hearth serve`'s HTTP API.
//!
//! Exit status: 0 on success; 2 when the request failed (the server's
//! message is printed); 3 when `create --wait` saw the VM fail (the failure
//! is printed); 4 when `--wait` gave up (the VM is left as it is).

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hearth_types::api::{
    ConsoleTail, CreateVm, Diagnosis, Finding, NetworkMode, NetworkPolicy, Vm, VmEvent,
};
use hearth_types::{BackendKind, RestartPolicy, Timestamp, VmId, VmState};

use super::client::{Client, ClientError};
use crate::cli::{ApiArgs, Backend, CreateArgs, NetworkArg, RestartArg, WaitFor};

/// The VM failed (or stopped before it was ready) while `--wait` watched.
const VM_FAILED: u8 = 3;
/// `--wait` ran out of time.
const WAIT_TIMED_OUT: u8 = 4;
/// How often `--wait` asks for the VM's state: quickly while a boot may
/// be about to finish, then gently (the server rate-limits each token).
const POLL_FAST: Duration = Duration::from_millis(250);
const POLL_SLOW: Duration = Duration::from_secs(1);
const FAST_FOR: Duration = Duration::from_secs(20);
/// How often `rm` asks again when the VM changed under its request.
const CONFLICT_TRIES: u32 = 5;

/// The NIC's policy from `--net-allow`, `--net-deny`, `--net-bandwidth`,
/// `--net-allow-domain`; none when no flag is given (the server checks
/// each value).
fn network_policy(args: &CreateArgs) -> Option<NetworkPolicy> {
    let policy = args.net.policy();
    (policy != NetworkPolicy::default()).then_some(policy)
}

pub fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.api)?;
    let req = CreateVm {
        image: args.image.clone(),
        backend: match args.backend {
            Backend::Qemu => BackendKind::Qemu,
            Backend::Firecracker => BackendKind::Firecracker,
        },
        vcpus: args.vcpus,
        memory_mib: args.memory,
        command: args.command.clone(),
        readiness_timeout_secs: args.readiness_timeout,
        config: read_config(args.config.as_deref())?,
        network: args.network.map(|n| match n {
            NetworkArg::Nat => NetworkMode::Nat,
            NetworkArg::None => NetworkMode::None,
        }),
        network_policy: network_policy(&args),
        persistent: args.persistent,
        disk_mib: args.disk_mib,
        restart: args.restart.map(|r| match r {
            RestartArg::Never => RestartPolicy::Never,
            RestartArg::OnFailure => RestartPolicy::OnFailure,
            RestartArg::Always => RestartPolicy::Always,
        }),
        idle_stop_secs: args.idle_stop,
        from_snapshot: args.from_snapshot.clone(),
    };
    let started = Instant::now();
    let vm: Vm = client.post("/v1/vms", Some(&req))?;
    let Some(goal) = args.wait else {
        print_vm_or_id(&vm, args.json)?;
        return Ok(ExitCode::SUCCESS);
    };
    if !args.json {
        // The id first, so a script has it even when the wait fails.
        print_line(vm.id.as_str())?;
    }
    let deadline = started + Duration::from_secs(args.timeout);
    let (vm, outcome) = wait(&client, vm, goal, deadline)?;
    if args.json {
        print_line(&serde_json::to_string_pretty(&vm)?)?;
    }
    eprintln!("hearth: {}", outcome.describe(&vm, started.elapsed()));
    if outcome == Outcome::Failed {
        eprint!("{}", first_finding(&client, &vm.id));
    }
    Ok(outcome.exit_code())
}

/// Why a failed VM failed, as `hearth vm why` would say it first: the most
/// likely cause and its fix, from the server's diagnosis. Best effort: a
/// diagnosis that cannot be had is one line saying so, not an error.
fn first_finding(client: &Client, id: &VmId) -> String {
    match client.get::<Diagnosis>(&format!("{}/diagnosis", vm_path(id))) {
        Ok(d) => describe_first_finding(&d),
        Err(e) => format!("hearth: no diagnosis ({e}); try `hearth vm why {id}`\n"),
    }
}

fn describe_first_finding(d: &Diagnosis) -> String {
    let Some(f) = d.findings.first() else {
        return format!(
            "hearth: its logs show no cause; see `hearth vm console {}`\n",
            d.vm
        );
    };
    let mut out = format!(
        "hearth: cause: {} [{}]\nhearth: fix: {}\n",
        f.cause, f.rule, f.fix
    );
    if d.findings.len() > 1 {
        out.push_str(&format!(
            "hearth: and {} more: `hearth vm why {}`\n",
            d.findings.len() - 1,
            d.vm
        ));
    }
    out
}

/// How `--wait` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Reached,
    Failed,
    TimedOut,
}

impl Outcome {
    fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Reached => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(VM_FAILED),
            Outcome::TimedOut => ExitCode::from(WAIT_TIMED_OUT),
        }
    }

    fn describe(self, vm: &Vm, waited: Duration) -> String {
        let secs = waited.as_secs_f64();
        match (self, &vm.failure) {
            (Outcome::Reached, _) if vm.state == VmState::Ready => {
                format!("{} is ready after {secs:.1} s", vm.id)
            }
            (Outcome::Reached, _) => format!("{} is {} after {secs:.1} s", vm.id, vm.state),
            (Outcome::Failed, Some(f)) => format!("{} failed ({}): {}", vm.id, f.code, f.message),
            (Outcome::Failed, None) => format!(
                "{} is {} and never became ready; see `hearth vm console {}`",
                vm.id, vm.state, vm.id
            ),
            (Outcome::TimedOut, _) => format!(
                "gave up after {secs:.0} s: {} is still {} (left as it is; `hearth vm rm {}` removes it)",
                vm.id, vm.state, vm.id
            ),
        }
    }
}

/// What `vm`'s state means for `goal`; None: keep waiting.
fn judge(vm: &Vm, goal: WaitFor) -> Option<Outcome> {
    if vm.failure.is_some() {
        return Some(Outcome::Failed);
    }
    let was_ready = vm.ready_at.is_some();
    match (goal, vm.state) {
        (WaitFor::Ready, VmState::Ready) => Some(Outcome::Reached),
        // A short command can be ready and done between two polls.
        (WaitFor::Ready, VmState::Stopping | VmState::Stopped | VmState::Destroyed) => {
            Some(if was_ready {
                Outcome::Reached
            } else {
                Outcome::Failed
            })
        }
        (WaitFor::Stopped, VmState::Stopped | VmState::Destroyed) => Some(Outcome::Reached),
        (_, VmState::Failed) => Some(Outcome::Failed),
        _ => None,
    }
}

fn wait(
    client: &Client,
    mut vm: Vm,
    goal: WaitFor,
    deadline: Instant,
) -> anyhow::Result<(Vm, Outcome)> {
    let path = vm_path(&vm.id);
    let started = Instant::now();
    loop {
        if let Some(outcome) = judge(&vm, goal) {
            return Ok((vm, outcome));
        }
        if Instant::now() >= deadline {
            return Ok((vm, Outcome::TimedOut));
        }
        let poll = if started.elapsed() < FAST_FOR {
            POLL_FAST
        } else {
            POLL_SLOW
        };
        std::thread::sleep(poll.min(deadline.saturating_duration_since(Instant::now())));
        match client.get(&path) {
            Ok(now) => vm = now,
            // Over the token's rate: the next poll is a second away anyway.
            Err(ClientError::Api { status: 429, .. }) => {
                std::thread::sleep(POLL_SLOW);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub fn list(api: &ApiArgs, json: bool) -> anyhow::Result<ExitCode> {
    let vms: Vec<Vm> = Client::new(api)?.get("/v1/vms")?;
    if json {
        print_line(&serde_json::to_string_pretty(&vms)?)?;
    } else {
        print_line(&vm_table(&vms, Timestamp::now()))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(api: &ApiArgs, id: &VmId, json: bool) -> anyhow::Result<ExitCode> {
    let vm: Vm = Client::new(api)?.get(&vm_path(id))?;
    if json {
        print_line(&serde_json::to_string_pretty(&vm)?)?;
    } else {
        print_line(&describe_vm(&vm, Timestamp::now()))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn events(api: &ApiArgs, id: &VmId, json: bool) -> anyhow::Result<ExitCode> {
    let events: Vec<VmEvent> = Client::new(api)?.get(&format!("{}/events", vm_path(id)))?;
    if json {
        print_line(&serde_json::to_string_pretty(&events)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for e in &events {
        // Display of these types ignores widths: pad their text.
        let (at, state) = (e.at.to_string(), e.state.to_string());
        out.push_str(&format!("{at:<24}  {state:<9}  {}\n", e.message));
    }
    print_line(out.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

pub fn console(api: &ApiArgs, id: &VmId, lines: usize, follow: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(api)?;
    let path = format!("{}/console?lines={lines}", vm_path(id));
    if !follow {
        let tail: ConsoleTail = client.get(&path)?;
        return print_tail(id, &tail);
    }
    let mut out = std::io::stdout().lock();
    for event in client.events(&format!("{path}&follow=true"))? {
        let event = event?;
        let line = match event.name.as_str() {
            // The line as a JSON string: empty lines and stray bytes survive.
            "message" => serde_json::from_str::<String>(&event.data).unwrap_or(event.data),
            "end" => {
                eprintln!(
                    "hearth: the console stream ended: {}",
                    end_reason(&event.data)
                );
                break;
            }
            _ => {
                eprintln!("hearth: {}: {}", event.name, event.data);
                continue;
            }
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // The reader went away (`| head`): that is not an error.
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `reason` of an `end` event (`{"reason": "..."}`), or its data as is.
fn end_reason(data: &str) -> String {
    serde_json::from_str::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v.get("reason")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| data.to_owned())
}

pub fn logs(api: &ApiArgs, id: &VmId, lines: usize) -> anyhow::Result<ExitCode> {
    let path = format!("{}/logs/hypervisor?lines={lines}", vm_path(id));
    let tail: ConsoleTail = Client::new(api)?.get(&path)?;
    print_tail(id, &tail)
}

pub fn why(api: &ApiArgs, id: &VmId, json: bool) -> anyhow::Result<ExitCode> {
    let diagnosis: Diagnosis = Client::new(api)?.get(&format!("{}/diagnosis", vm_path(id)))?;
    if json {
        print_line(&serde_json::to_string_pretty(&diagnosis)?)?;
    } else {
        print_line(&describe_diagnosis(&diagnosis))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The findings, most likely cause first, each with all its evidence.
fn describe_diagnosis(d: &Diagnosis) -> String {
    let mut out = match d.findings.len() {
        0 => return format!("{}: no findings: its logs show nothing wrong", d.vm),
        1 => format!("{}: 1 finding", d.vm),
        n => format!("{}: {n} findings, the most likely cause first", d.vm),
    };
    for (i, f) in d.findings.iter().enumerate() {
        out.push_str("\n\n");
        out.push_str(&describe_finding(i + 1, f));
    }
    out
}

fn describe_finding(n: usize, f: &Finding) -> String {
    let mut out = format!("{n}. {} [{}]", f.cause, f.rule);
    if !f.evidence.is_empty() {
        out.push_str("\n   evidence:");
        for line in &f.evidence {
            out.push_str("\n     ");
            out.push_str(line);
        }
    }
    out.push_str("\n   fix: ");
    out.push_str(&f.fix);
    out
}

pub fn hold(api: &ApiArgs, id: &VmId, held: bool) -> anyhow::Result<ExitCode> {
    let verb = if held { "hold" } else { "release" };
    let vm: Vm = Client::new(api)?.post(&format!("{}/{verb}", vm_path(id)), None::<&()>)?;
    let what = if vm.held {
        "held: it will not be cleaned up until released"
    } else {
        "released: it is cleaned up after its grace period once it stops"
    };
    eprintln!("hearth: {} is {} and {what}", vm.id, vm.state);
    Ok(ExitCode::SUCCESS)
}

/// `hearth vm stop|start ID` (`verb`): answers at once; `hearth vm show`
/// follows the VM from there.
pub fn stop_or_start(api: &ApiArgs, id: &VmId, verb: &str) -> anyhow::Result<ExitCode> {
    let vm: Vm = Client::new(api)?.post(&format!("{}/{verb}", vm_path(id)), None::<&()>)?;
    let kept = if vm.persistent {
        "; its disk is kept"
    } else {
        ""
    };
    eprintln!("hearth: {} is {}{kept}", vm.id, vm.state);
    Ok(ExitCode::SUCCESS)
}

pub fn remove(api: &ApiArgs, id: &VmId) -> anyhow::Result<ExitCode> {
    let client = Client::new(api)?;
    let mut attempt = 1;
    let vm: Vm = loop {
        match client.delete(&vm_path(id)) {
            // The VM moved on (say, from requested to preparing) while the
            // server handled the request: ask again about its new state.
            Err(ClientError::Api { code, .. })
                if code == "conflict" && attempt < CONFLICT_TRIES =>
            {
                attempt += 1;
                std::thread::sleep(POLL_FAST);
            }
            other => break other?,
        }
    };
    let what = match vm.state {
        VmState::Destroyed => "destroyed; its logs are archived",
        _ => "stopping; it is destroyed (logs archived) once stopped",
    };
    eprintln!("hearth: {} is {what}", vm.id);
    Ok(ExitCode::SUCCESS)
}

fn vm_path(id: &VmId) -> String {
    format!("/v1/vms/{id}")
}

fn print_vm_or_id(vm: &Vm, json: bool) -> anyhow::Result<()> {
    if json {
        print_line(&serde_json::to_string_pretty(vm)?)
    } else {
        print_line(vm.id.as_str())
    }
}

fn print_tail(id: &VmId, tail: &ConsoleTail) -> anyhow::Result<ExitCode> {
    if !tail.lines.is_empty() {
        print_line(&tail.lines.join("\n"))?;
    }
    if tail.archived {
        eprintln!("hearth: {id} is destroyed; this is its archived log");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `text` and a newline; a closed stdout is not an error.
fn print_line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `ID STATE IMAGE AGE FAILURE`, one VM per line.
fn vm_table(vms: &[Vm], now: Timestamp) -> String {
    if vms.is_empty() {
        return "no VMs: create one with `hearth vm create`".to_owned();
    }
    let mut out = format!(
        "{:<16} {:<16} {:<10} {:>5}  FAILURE",
        "ID", "STATE", "IMAGE", "AGE"
    );
    for vm in vms {
        let state = if vm.held {
            format!("{} (held)", vm.state)
        } else {
            vm.state.to_string()
        };
        let failure = vm
            .failure
            .as_ref()
            .map(|f| f.code.to_string())
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "\n{:<16} {:<16} {:<10} {:>5}  {failure}",
            vm.id.as_str(),
            state,
            vm.image,
            age(now.since(vm.created_at))
        ));
    }
    out
}

/// `42s`, `7m`, `3h`, `12d`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// One VM, a field per line.
fn describe_vm(vm: &Vm, now: Timestamp) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("id", vm.id.to_string()),
        ("tenant", vm.tenant.to_string()),
        (
            "state",
            if vm.held {
                format!("{} (held)", vm.state)
            } else {
                vm.state.to_string()
            },
        ),
    ];
    if let Some(f) = &vm.failure {
        rows.push(("failure", format!("{}: {}", f.code, f.message)));
    }
    rows.push((
        "machine",
        format!(
            "{} on {}, {} vCPU, {} MiB",
            vm.image, vm.backend, vm.vcpus, vm.memory_mib
        ),
    ));
    if !vm.command.is_empty() {
        rows.push(("command", format!("{:?}", vm.command)));
    }
    if let Some(kept) = persistence_row(vm) {
        rows.push(("persistent", kept));
    }
    let ago = |t: Timestamp| format!("{t} ({} ago)", age(now.since(t)));
    rows.push(("created", ago(vm.created_at)));
    match vm.ready_at {
        Some(t) => rows.push((
            "ready",
            format!(
                "{t} ({:.1} s after create)",
                t.since(vm.created_at).as_secs_f64()
            ),
        )),
        None if vm.state.is_active() => rows.push(("ready by", vm.ready_deadline.to_string())),
        None => {}
    }
    rows.push(("updated", ago(vm.updated_at)));
    match (vm.cleanup_after, vm.held) {
        (_, true) if vm.state != VmState::Destroyed => {
            rows.push(("cleanup", "not while held".into()))
        }
        (Some(t), _) if vm.state != VmState::Destroyed => {
            rows.push(("cleanup after", t.to_string()))
        }
        _ => {}
    }
    rows.iter()
        .map(|(k, v)| format!("{:<14}{v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// "disk 1024 MiB, restart on-failure (2 since a healthy run), next at
/// ..., idle stop after 600 s" for a persistent VM.
fn persistence_row(vm: &Vm) -> Option<String> {
    let mib = vm.disk_mib.filter(|_| vm.persistent)?;
    let mut row = format!("disk {mib} MiB, restart {}", vm.restart);
    if vm.restarts > 0 {
        row.push_str(&format!(" ({} since a healthy run)", vm.restarts));
    }
    if let Some(at) = vm.restart_at {
        row.push_str(&format!(", next at {at}"));
    }
    if let Some(secs) = vm.idle_stop_secs {
        row.push_str(&format!(", idle stop after {secs} s"));
    }
    Some(row)
}

/// The guest configuration in `path` (JSON), or the empty one.
fn read_config(path: Option<&std::path::Path>) -> anyhow::Result<hearth_types::guest::GuestConfig> {
    let Some(path) = path else {
        return Ok(Default::default());
    };
    let text = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("could not read the config file {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| {
        anyhow::anyhow!(
            "the config file {} is not a guest configuration: {e} (see docs/api.md)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use hearth_types::{Failure, FailureCode};

    use super::*;

    fn vm(state: VmState) -> Vm {
        let t = Timestamp::from_millis(1_795_000_000_000);
        Vm {
            id: "vm-0123456789ab".parse().unwrap(),
            tenant: "default".parse().unwrap(),
            state,
            failure: None,
            held: false,
            image: "minimal".into(),
            backend: BackendKind::Qemu,
            vcpus: 1,
            memory_mib: 256,
            command: Vec::new(),
            created_at: t,
            updated_at: t,
            ready_at: None,
            ready_deadline: t.plus(Duration::from_secs(120)),
            cleanup_after: None,
            persistent: false,
            disk_mib: None,
            restart: RestartPolicy::Never,
            idle_stop_secs: None,
            restarts: 0,
            restart_at: None,
            network_policy: None,
        }
    }

    #[test]
    fn waiting_for_ready_ends_on_ready_failure_or_a_stop_before_ready() {
        assert_eq!(judge(&vm(VmState::Booting), WaitFor::Ready), None);
        assert_eq!(
            judge(&vm(VmState::Ready), WaitFor::Ready),
            Some(Outcome::Reached)
        );
        let mut failed = vm(VmState::Failed);
        failed.failure = Some(Failure {
            code: FailureCode::BootTimeout,
            message: "not ready within 2 s".into(),
        });
        assert_eq!(judge(&failed, WaitFor::Ready), Some(Outcome::Failed));
        assert_eq!(judge(&failed, WaitFor::Stopped), Some(Outcome::Failed));
        assert_eq!(
            judge(&vm(VmState::Stopped), WaitFor::Ready),
            Some(Outcome::Failed)
        );
        let mut done = vm(VmState::Stopped);
        done.ready_at = Some(done.created_at);
        assert_eq!(judge(&done, WaitFor::Ready), Some(Outcome::Reached));
    }

    #[test]
    fn waiting_for_stopped_goes_past_ready() {
        assert_eq!(judge(&vm(VmState::Ready), WaitFor::Stopped), None);
        assert_eq!(
            judge(&vm(VmState::Stopped), WaitFor::Stopped),
            Some(Outcome::Reached)
        );
    }

    #[test]
    fn the_failure_is_described_with_its_code_and_reason() {
        let mut failed = vm(VmState::Failed);
        failed.failure = Some(Failure {
            code: FailureCode::HypervisorExited,
            message: "the hypervisor ended".into(),
        });
        let text = Outcome::Failed.describe(&failed, Duration::from_secs(3));
        assert_eq!(
            text,
            "vm-0123456789ab failed (hypervisor_exited): the hypervisor ended"
        );
    }

    #[test]
    fn the_table_has_a_row_per_vm_with_age_and_failure() {
        let mut held = vm(VmState::Failed);
        held.held = true;
        held.failure = Some(Failure {
            code: FailureCode::BootTimeout,
            message: String::new(),
        });
        let now = held.created_at.plus(Duration::from_secs(125));
        let table = vm_table(&[vm(VmState::Ready), held], now);
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[0].starts_with("ID ") && rows[0].ends_with("FAILURE"));
        assert!(
            rows[1].contains("ready") && rows[1].ends_with("2m  -"),
            "{table}"
        );
        assert!(rows[2].contains("failed (held)") && rows[2].ends_with("boot_timeout"));
    }

    #[test]
    fn a_failed_wait_shows_the_first_cause_and_its_fix() {
        let id: VmId = "vm-0123456789ab".parse().unwrap();
        let finding = |rule: &str| Finding {
            rule: rule.into(),
            cause: format!("cause of {rule}"),
            evidence: vec!["a line".into()],
            fix: format!("fix of {rule}"),
        };
        let two = Diagnosis {
            vm: id.clone(),
            findings: vec![finding("out_of_memory"), finding("never_ready")],
        };
        assert_eq!(
            describe_first_finding(&two),
            "hearth: cause: cause of out_of_memory [out_of_memory]\n\
             hearth: fix: fix of out_of_memory\n\
             hearth: and 1 more: `hearth vm why vm-0123456789ab`\n"
        );
        let none = Diagnosis {
            vm: id,
            findings: Vec::new(),
        };
        assert!(describe_first_finding(&none).contains("hearth vm console vm-0123456789ab"));
    }

    #[test]
    fn a_diagnosis_lists_each_finding_with_all_its_evidence() {
        let id: VmId = "vm-0123456789ab".parse().unwrap();
        let none = Diagnosis {
            vm: id.clone(),
            findings: Vec::new(),
        };
        assert_eq!(
            describe_diagnosis(&none),
            "vm-0123456789ab: no findings: its logs show nothing wrong"
        );
        let finding = Finding {
            rule: "out_of_memory".into(),
            cause: "the guest ran out of memory".into(),
            evidence: vec!["a".into(), "b".into()],
            fix: "give the VM more memory".into(),
        };
        let two = Diagnosis {
            vm: id,
            findings: vec![finding.clone(), finding],
        };
        let text = describe_diagnosis(&two);
        assert!(text.starts_with("vm-0123456789ab: 2 findings, the most likely cause first\n\n1. the guest ran out of memory [out_of_memory]\n   evidence:\n     a\n     b\n   fix: give the VM more memory\n\n2. "), "{text}");
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        assert_eq!(age(Duration::from_secs(59)), "59s");
        assert_eq!(age(Duration::from_secs(60)), "1m");
        assert_eq!(age(Duration::from_secs(7200)), "2h");
        assert_eq!(age(Duration::from_secs(86400 * 3)), "3d");
    }

    #[test]
    fn show_names_the_failure_and_when_cleanup_happens() {
        let mut failed = vm(VmState::Failed);
        failed.failure = Some(Failure {
            code: FailureCode::BootTimeout,
            message: "not ready within 2 s".into(),
        });
        failed.cleanup_after = Some(failed.created_at.plus(Duration::from_secs(900)));
        let text = describe_vm(&failed, failed.created_at);
        assert!(
            text.contains("failure:      boot_timeout: not ready within 2 s"),
            "{text}"
        );
        assert!(text.contains("cleanup after:"), "{text}");
        failed.held = true;
        assert!(describe_vm(&failed, failed.created_at).contains("cleanup:      not while held"));
    }
}
