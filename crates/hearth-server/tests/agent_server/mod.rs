//! A real server with agent readiness on, for the diagnosis tests that
//! need the agent's records: a [`Controller`] over a SQLite file on a data
//! directory of the test's own, served on 127.0.0.1:0; and the data
//! directories those tests boot from (the suite's shared kernel and images,
//! or a Debian image derived with `debugfs`).

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_control::controller::{Controller, ControllerConfig};
use hearth_guestkit::image::{AgentChoice, ImageName};
use hearth_guestkit::DataDir;
use hearth_server::{mint_token, ServerConfig};
use hearth_store::SqliteStore;
use hearth_testkit::PrivateDir;
use hearth_types::api::{Diagnosis, Finding, Vm};
use hearth_types::{TenantId, VmState};

/// A server on `dir` with agent readiness on, its reconcilers running.
pub struct AgentServer {
    base: String,
    http: reqwest::Client,
    token: String,
    _reconcilers: tokio::task::JoinHandle<()>,
}

impl AgentServer {
    pub async fn start(dir: &Path) -> AgentServer {
        let data = DataDir::new(dir);
        let store = SqliteStore::open(&data.store_file()).expect("store opens");
        let mut cc = ControllerConfig::new(data);
        cc.tick = Duration::from_millis(200);
        cc.grace = Duration::from_secs(5);
        cc.agent_readiness = true;
        let controller = Controller::new(Arc::new(store), cc);
        let reconcilers = controller.start().await;
        let (secret, record) = mint_token("team-a".parse::<TenantId>().expect("tenant"), false);
        controller
            .store()
            .insert_token(&record)
            .await
            .expect("token stored");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(hearth_server::serve_on(
            listener,
            controller,
            ServerConfig::default(),
            std::future::pending(),
        ));
        AgentServer {
            base,
            http: reqwest::Client::new(),
            token: secret,
            _reconcilers: reconcilers,
        }
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("JSON")
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: &str) -> reqwest::Response {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// GETs the VM until `done` holds, at most `limit`.
    pub async fn wait_vm(&self, id: &str, limit: Duration, done: impl Fn(&Vm) -> bool) -> Vm {
        let started = Instant::now();
        loop {
            let vm: Vm = self.get(&format!("/v1/vms/{id}")).await;
            if done(&vm) {
                return vm;
            }
            assert!(started.elapsed() < limit, "VM {id} after {limit:?}: {vm:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl AgentServer {
    /// `POST /v1/vms` with `body`: the new VM's id.
    pub async fn create(&self, body: &str) -> String {
        let r = self.send(reqwest::Method::POST, "/v1/vms", body).await;
        assert!(r.status().is_success(), "create: {}", r.status());
        let vm: Vm = r.json().await.expect("a Vm");
        vm.id.to_string()
    }

    /// Destroys the VM and waits until it is.
    pub async fn destroy(&self, id: &str) {
        let r = self
            .send(reqwest::Method::DELETE, &format!("/v1/vms/{id}"), "")
            .await;
        assert_eq!(r.status(), 202);
        self.wait_vm(id, Duration::from_secs(60), |vm| {
            vm.state == VmState::Destroyed
        })
        .await;
    }
}

/// A data directory of its own sharing the suite's kernel and minimal
/// image, which carries the static agent.
pub fn data_dir_with_agent_image() -> PrivateDir {
    data_dir_with_agent_images(&[ImageName::Minimal])
}

/// The same with `images` built (with the agent) in the shared directory.
pub fn data_dir_with_agent_images(images: &[ImageName]) -> PrivateDir {
    let agent = hearth_testkit::static_agent().expect("a static agent");
    if std::env::var_os("HEARTH_AGENT").is_none() {
        std::env::set_var("HEARTH_AGENT", &agent);
    }
    let shared = DataDir::new(hearth_testkit::test_data_dir());
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(&shared, &mut |_| {}).expect("kernel fetch");
    for &image in images {
        hearth_guestkit::image::ensure_image(&shared, image, false, AgentChoice::Find, &mut |_| {})
            .unwrap_or_else(|e| panic!("the {image:?} image builds: {e}"));
    }
    hearth_testkit::private_data_dir()
}

/// GETs the VM's diagnosis until it has every rule in `rules`, at most
/// `limit`: the services' records arrive while the VM runs.
pub async fn diagnosis_with(
    server: &AgentServer,
    id: &str,
    rules: &[&str],
    limit: Duration,
) -> Diagnosis {
    let started = Instant::now();
    loop {
        let found: Diagnosis = server.get(&format!("/v1/vms/{id}/diagnosis")).await;
        if rules
            .iter()
            .all(|r| found.findings.iter().any(|f| f.rule == *r))
        {
            return found;
        }
        assert!(
            started.elapsed() < limit,
            "not all of {rules:?} after {limit:?}: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn finding<'a>(found: &'a Diagnosis, rule: &str) -> &'a Finding {
    found
        .findings
        .iter()
        .find(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {rule}: {found:#?}"))
}

/// A data directory sharing the suite's kernels and minimal image whose
/// `debian` image is the shared one with `removed` paths gone, `files`
/// added (by `debugfs` on a copy) and `links` made (path, target); its
/// manifest is the shared one.
pub fn data_dir_with_derived_debian(
    removed: &[&str],
    files: &[(&str, &[u8])],
    links: &[(&str, &str)],
) -> PrivateDir {
    let _ = data_dir_with_agent_images(&[ImageName::Minimal, ImageName::Debian]);
    let shared = hearth_testkit::test_data_dir();
    let dir = PrivateDir::new("hearth-server-");
    for name in ["kernels", "cache", "locks"] {
        std::os::unix::fs::symlink(shared.join(name), dir.path().join(name)).expect("symlink");
    }
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("debian")).expect("image dir");
    std::os::unix::fs::symlink(shared.join("images/minimal"), images.join("minimal"))
        .expect("symlink");
    let debian = shared.join("images/debian");
    std::fs::copy(
        debian.join("manifest.json"),
        images.join("debian/manifest.json"),
    )
    .expect("manifest");
    let rootfs = images.join("debian/rootfs.ext4");
    let copied = Command::new("cp")
        .arg("--sparse=always")
        .arg(debian.join("rootfs.ext4"))
        .arg(&rootfs)
        .status()
        .is_ok_and(|s| s.success());
    assert!(copied, "copying the debian image failed");
    let mut script = String::new();
    for path in removed {
        script.push_str(&format!("rm {path}\n"));
    }
    for (n, (path, content)) in files.iter().enumerate() {
        let local = dir.path().join(format!("file-{n}"));
        std::fs::write(&local, content).expect("a file for debugfs");
        script.push_str(&parent_dir(path));
        script.push_str(&format!("write {} {path}\n", local.display()));
        let mode = if content.starts_with(b"\x7fELF") {
            "0100755"
        } else {
            "0100644"
        };
        script.push_str(&format!("sif {path} mode {mode}\n"));
    }
    for (path, target) in links {
        script.push_str(&parent_dir(path));
        script.push_str(&format!("symlink {path} {target}\n"));
    }
    let commands = dir.path().join("debugfs.cmds");
    std::fs::write(&commands, script).expect("debugfs script");
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&commands)
        .arg(&rootfs)
        .output()
        .expect("debugfs runs (e2fsprogs)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `mkdir` of a folder that is there already complains; that is fine.
    assert!(
        out.status.success()
            && stderr
                .lines()
                .all(|l| l.starts_with("debugfs ") || l.contains("already exists")),
        "debugfs: {stderr}"
    );
    dir
}

/// The debugfs command making `path`'s folder (one level: the tests' folders
/// sit in ones that exist).
pub fn parent_dir(path: &str) -> String {
    let parent = Path::new(path).parent().expect("an absolute path");
    format!("mkdir {}\n", parent.display())
}
