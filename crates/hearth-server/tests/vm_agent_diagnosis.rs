//! Diagnosis rules that need the agent's side of the story, on real VMs
//! behind the real API, each VM broken by the test: a Debian image whose
//! agent binary is cut short (`agent_never_connected`, with the console's
//! last lines), a service whose readiness port never opens
//! (`readiness_never_passed`), services that crash-loop, die of SIGILL,
//! cannot be executed or miss a library (from the agent's records, also
//! after destroy), and Debian images with a failing unit or a unit held
//! behind network-online.target (from the agent's boot report).
//!
//! The server here runs with agent readiness on (the VM is ready when its
//! agent says so), which `common::vm_server` leaves at its default, on a
//! data directory of its own; derived images are made with `debugfs` on a
//! copy of the suite's shared Debian image.

mod agent_server;

use std::time::{Duration, Instant};

use agent_server::*;
use hearth_guestkit::image::ImageName;
use hearth_types::api::{Diagnosis, Finding};
use hearth_types::{FailureCode, VmState};

/// Waits for the VM to fail its readiness deadline; its diagnosis then.
async fn timed_out_diagnosis(server: &AgentServer, id: &str) -> Diagnosis {
    let failed = server
        .wait_vm(id, Duration::from_secs(90), |vm| {
            vm.state == VmState::Failed
        })
        .await;
    assert_eq!(
        failed.failure.as_ref().map(|f| f.code),
        Some(FailureCode::BootTimeout),
        "{failed:?}"
    );
    let found: Diagnosis = server.get(&format!("/v1/vms/{id}/diagnosis")).await;
    eprintln!("{found:#?}");
    found
}

/// The finding of `rule`; fails the test, showing them all, without one.
fn finding<'a>(found: &'a Diagnosis, rule: &str) -> &'a Finding {
    found
        .findings
        .iter()
        .find(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule}: {found:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_connects_is_named_with_the_last_console_lines() {
    let Some(agent) = hearth_testkit::static_agent() else {
        return; // static_agent printed why
    };
    // Debian's hearth-agent.service runs /usr/local/bin/hearth-agent: here
    // cut to its first 4 KiB (an ELF header and nothing the kernel can
    // run), while the manifest still says the image carries the agent.
    // (In the minimal image the agent is PID 1: cut short, it is a dead
    // init and a kernel panic, which `kernel_panic` explains.)
    let agent = std::fs::read(agent).expect("read the agent");
    let dir = tokio::task::spawn_blocking(move || {
        let path = "/usr/local/bin/hearth-agent";
        data_dir_with_derived_debian(&[path], &[(path, &agent[..4096])], &[])
    })
    .await
    .expect("assets task");
    let server = AgentServer::start(dir.path()).await;
    // Long enough for a loaded host to get to the agent's unit.
    let body = r#"{"image":"debian","memory_mib":512,"readiness_timeout_secs":50}"#;
    let id = server.create(body).await;
    let found = timed_out_diagnosis(&server, &id).await;
    let f = finding(&found, "agent_never_connected");
    assert!(f.cause.contains("never connected"), "{f:?}");
    // Cut short, the agent dies at once, silently; systemd's lines about
    // its unit, restarted again and again, are what the console shows.
    assert!(
        f.evidence
            .iter()
            .any(|l| l.contains("Started hearth-agent.service")),
        "the console's lines about the agent are quoted: {f:?}"
    );
    assert!(f.fix.contains("hearth.agent"), "{f:?}");
    assert!(
        found.findings.iter().all(|f| f.rule != "never_ready"),
        "the timeout is the silent agent's, told once: {found:#?}"
    );

    server.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_port_that_never_opens_is_named_with_the_services_output() {
    if hearth_testkit::static_agent().is_none() {
        return; // static_agent printed why
    }
    let dir = tokio::task::spawn_blocking(data_dir_with_agent_image)
        .await
        .expect("assets task");
    let server = AgentServer::start(dir.path()).await;
    // It says it listens, on the wrong port, and never opens 8080.
    let body = serde_json::json!({
        "image": "minimal",
        "readiness_timeout_secs": 20,
        "config": {"services": [{
            "name": "web",
            "argv": ["sh", "-c", "echo 'listening on 0.0.0.0:8081'; exec sleep 600"],
            "readiness": {"kind": "tcp", "port": 8080}
        }]}
    });
    let id = server.create(&body.to_string()).await;
    let found = timed_out_diagnosis(&server, &id).await;
    let f = finding(&found, "readiness_never_passed");
    assert!(f.cause.contains("service web (TCP port 8080)"), "{f:?}");
    assert!(f.cause.contains("kept running"), "{f:?}");
    assert!(
        f.evidence
            .iter()
            .any(|l| l == "web: listening on 0.0.0.0:8081"),
        "the service's own last line: {f:?}"
    );
    assert!(f.fix.contains("127.0.0.1:8080"), "{f:?}");
    assert!(
        found
            .findings
            .iter()
            .all(|f| f.rule != "agent_never_connected"),
        "the agent did connect: {found:#?}"
    );

    server.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_services_are_diagnosed_from_the_agents_records_also_after_destroy() {
    if hearth_testkit::static_agent().is_none() {
        return; // static_agent printed why
    }
    let dir = tokio::task::spawn_blocking(data_dir_with_agent_image)
        .await
        .expect("assets task");
    let server = AgentServer::start(dir.path()).await;
    // One broken service per rule: one that exits at once with an error,
    // restarted until it is a crash loop; one killed by SIGILL; a "program"
    // that is four bytes of an ELF header, written by the VM's config.
    let body = serde_json::json!({
        "image": "minimal",
        "readiness_timeout_secs": 60,
        "config": {
            "files": [{"path": "/opt/app/server", "content": "\u{7f}ELF", "mode": 0o755}],
            "services": [
                {
                    "name": "worker",
                    "argv": ["sh", "-c", "echo 'fatal: DATABASE_URL is not set' >&2; exit 3"],
                    "restart": "always",
                    "crash_loop": {"restarts": 3, "window_secs": 60}
                },
                {
                    "name": "fast-math",
                    "argv": ["sh", "-c", "echo 'using AVX-512 kernels'; kill -ILL $$"],
                    "restart": "never"
                },
                {"name": "server", "argv": ["/opt/app/server"], "restart": "never"}
            ]
        }
    });
    let id = server.create(&body.to_string()).await;
    let rules = ["crash_loop", "killed_by_sigill", "exec_format_error"];
    let live = diagnosis_with(&server, &id, &rules, Duration::from_secs(60)).await;
    eprintln!("{live:#?}");

    let looped = finding(&live, "crash_loop");
    assert!(
        looped.cause.starts_with("service worker keeps exiting"),
        "{looped:?}"
    );
    assert!(looped.cause.contains("exited with status 3"), "{looped:?}");
    assert_eq!(
        looped
            .evidence
            .iter()
            .filter(|l| *l == "worker: fatal: DATABASE_URL is not set")
            .count(),
        1,
        "its last stderr line, once for all its runs: {looped:?}"
    );
    let sigill = finding(&live, "killed_by_sigill");
    assert!(
        sigill
            .cause
            .starts_with("service fast-math was killed by SIGILL"),
        "{sigill:?}"
    );
    assert!(
        sigill
            .evidence
            .iter()
            .any(|l| l == "fast-math: killed by signal 4"),
        "{sigill:?}"
    );
    let format = finding(&live, "exec_format_error");
    assert!(
        format.cause.contains("the program of service server"),
        "{format:?}"
    );
    assert!(
        format
            .evidence
            .iter()
            .any(|l| l.starts_with("server: could not be started: ")),
        "{format:?}"
    );

    server.destroy(&id).await;
    let archived: Diagnosis = server.get(&format!("/v1/vms/{id}/diagnosis")).await;
    for rule in rules {
        assert_eq!(
            finding(&archived, rule),
            finding(&live, rule),
            "after destroy, from the store"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_services_missing_library_is_named_from_its_stderr() {
    if hearth_testkit::static_agent().is_none() {
        return; // static_agent printed why
    }
    let dir = tokio::task::spawn_blocking(|| {
        data_dir_with_agent_images(&[ImageName::Minimal, ImageName::Debian])
    })
    .await
    .expect("assets task");
    let server = AgentServer::start(dir.path()).await;
    // ip needs libmnl; the service removes it (in this VM's layer only)
    // and runs ip, whose loader then stops on stderr.
    let body = serde_json::json!({
        "image": "debian",
        "memory_mib": 512,
        "readiness_timeout_secs": 60,
        "config": {"services": [{
            "name": "net",
            "argv": ["sh", "-c", "rm -f /usr/lib/x86_64-linux-gnu/libmnl.so.0*; exec ip -brief link"],
            "restart": "never"
        }]}
    });
    let id = server.create(&body.to_string()).await;
    let found = diagnosis_with(&server, &id, &["missing_library"], Duration::from_secs(60)).await;
    eprintln!("{found:#?}");
    let f = finding(&found, "missing_library");
    assert!(f.cause.starts_with("service net could not start"), "{f:?}");
    assert!(f.cause.contains("libmnl.so.0"), "{f:?}");
    assert!(
        f.evidence.iter().any(|l| l.starts_with("net: ")
            && l.contains("error while loading shared libraries: libmnl.so.0")),
        "{f:?}"
    );
    assert!(
        f.evidence
            .iter()
            .any(|l| l == "net: exited with status 127"),
        "{f:?}"
    );

    server.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_units_journal_lines_come_from_the_boot_report() {
    if hearth_testkit::static_agent().is_none() {
        return; // static_agent printed why
    }
    // A unit that fails at boot; journald does not forward to the console
    // here, so only the agent's report has its words.
    let unit = "[Unit]\nDescription=Load the site settings\n\n[Service]\nType=oneshot\n\
                ExecStart=/bin/sh -c 'echo \"settings: cannot read /etc/site/settings.conf\" >&2; exit 3'\n\n\
                [Install]\nWantedBy=multi-user.target\n";
    let dir = tokio::task::spawn_blocking(move || {
        data_dir_with_derived_debian(
            &[],
            &[("/etc/systemd/system/site-settings.service", unit.as_bytes())],
            &[(
                "/etc/systemd/system/multi-user.target.wants/site-settings.service",
                "/etc/systemd/system/site-settings.service",
            )],
        )
    })
    .await
    .expect("assets task");
    let server = AgentServer::start(dir.path()).await;
    // The agent reports the boot again once ready: this service gets ready
    // only after the unit failed, so that report lists it.
    let wait = "until systemctl is-failed --quiet site-settings.service; do sleep 0.2; done; \
                while true; do busybox nc -l -p 8080 </dev/null; done";
    let body = serde_json::json!({
        "image": "debian",
        "memory_mib": 512,
        "readiness_timeout_secs": 60,
        "config": {"services": [{
            "name": "after-settings",
            "argv": ["sh", "-c", wait],
            "readiness": {"kind": "tcp", "port": 8080}
        }]}
    });
    let id = server.create(&body.to_string()).await;
    let telling = "settings: cannot read /etc/site/settings.conf";
    let started = Instant::now();
    let found = loop {
        let found: Diagnosis = server.get(&format!("/v1/vms/{id}/diagnosis")).await;
        let told = found
            .findings
            .iter()
            .any(|f| f.rule == "failed_unit" && f.evidence.iter().any(|l| l == telling));
        if told {
            break found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no {telling:?}: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("{found:#?}");
    let units: Vec<_> = found
        .findings
        .iter()
        .filter(|f| f.rule == "failed_unit")
        .collect();
    assert_eq!(units.len(), 1, "one finding for the unit: {found:#?}");
    let f = units[0];
    assert!(
        f.cause
            .contains("site-settings.service (Load the site settings)"),
        "the full name, not the status line's shortened one: {f:?}"
    );
    assert!(
        !f.fix.contains("ForwardToConsole"),
        "its words are at hand: {f:?}"
    );

    server.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_boot_report_names_a_unit_held_by_network_online() {
    if hearth_testkit::static_agent().is_none() {
        return; // static_agent printed why
    }
    let unit = "[Unit]\nDescription=Sync with upstream\nWants=network-online.target\n\
                After=network-online.target\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n\n\
                [Install]\nWantedBy=multi-user.target\n";
    let dir = tokio::task::spawn_blocking(move || {
        let wait_online = "systemd-networkd-wait-online.service";
        // hearth's image masks the wait; this one does not, and enables it.
        data_dir_with_derived_debian(
            &[&format!("/etc/systemd/system/{wait_online}")],
            &[("/etc/systemd/system/sync.service", unit.as_bytes())],
            &[
                (
                    "/etc/systemd/system/multi-user.target.wants/sync.service",
                    "/etc/systemd/system/sync.service",
                ),
                (
                    &format!("/etc/systemd/system/network-online.target.wants/{wait_online}"),
                    &format!("/lib/systemd/system/{wait_online}"),
                ),
            ],
        )
    })
    .await
    .expect("assets task");
    let server = AgentServer::start(dir.path()).await;
    // The agent reports the boot again once ready: this service gets ready
    // once wait-online is running, so that report shows who waits behind it.
    let wait = "until [ \"$(systemctl show -P ActiveState systemd-networkd-wait-online.service)\" = activating ]; \
                do sleep 0.2; done; while true; do busybox nc -l -p 8080 </dev/null; done";
    let body = serde_json::json!({
        "image": "debian",
        "memory_mib": 512,
        "readiness_timeout_secs": 60,
        "config": {"services": [{
            "name": "after-wait-online",
            "argv": ["sh", "-c", wait],
            "readiness": {"kind": "tcp", "port": 8080}
        }]}
    });
    let id = server.create(&body.to_string()).await;
    let rule = "waiting_on_network_online";
    let found = diagnosis_with(&server, &id, &[rule], Duration::from_secs(60)).await;
    eprintln!("{found:#?}");
    let f = finding(&found, rule);
    assert!(
        f.cause.contains("sync.service") && f.cause.contains("behind network-online.target"),
        "the held unit is named: {f:?}"
    );
    for job in [
        "systemd-networkd-wait-online.service start running",
        "sync.service start waiting",
    ] {
        assert!(f.evidence.iter().any(|l| l.ends_with(job)), "{job}: {f:?}");
    }

    server.destroy(&id).await;
}
