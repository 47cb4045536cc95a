//! A real `hearth serve` on a private data directory, for process-level
//! tests: kernels, images, caches and build locks are shared with the
//! suite's data directory through symlinks; the store, VM directories and
//! archives are the test's own. Dropping the [`Host`] kills the server and
//! any hypervisor it left (tests assert there is none first).

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use hearth_types::api::Vm;
use hearth_types::VmState;

use super::{data_dir, ensure_assets, processes_mentioning};

/// How long a server has to answer /healthz after it starts.
const SERVE_START: Duration = Duration::from_secs(30);
/// Polling interval of the waits below.
const POLL: Duration = Duration::from_millis(50);

/// A private data directory and, while started, its `hearth serve`.
pub struct Host {
    work: tempfile::TempDir,
    serve: Option<Serve>,
    /// Arguments of every `serve` start after `--listen`.
    serve_args: Vec<String>,
    /// How many servers were started (names their logs).
    starts: u32,
    admin_token: Option<String>,
    agent: ureq::Agent,
}

/// Raw HTTP calls to one server with one token.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub token: String,
    agent: ureq::Agent,
}

impl Api {
    /// `method` (GET, POST, DELETE) on `path`, with an optional JSON body:
    /// the status and the body.
    pub fn call(&self, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let res = match method {
            "GET" => self.agent.get(&url).header("authorization", auth).call(),
            "POST" => {
                let req = self.agent.post(&url).header("authorization", auth);
                match json {
                    Some(body) => req.content_type("application/json").send(body),
                    None => req.send_empty(),
                }
            }
            "PUT" => {
                let req = self.agent.put(&url).header("authorization", auth);
                req.content_type("application/json")
                    .send(json.unwrap_or("{}"))
            }
            "DELETE" => self.agent.delete(&url).header("authorization", auth).call(),
            other => panic!("no method {other}"),
        };
        let mut res = res.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let body = res.body_mut().read_to_string().expect("body");
        (res.status().as_u16(), body)
    }

    /// The JSON body of a call that must answer `expect`.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        expect: u16,
    ) -> T {
        let (status, text) = self.call(method, path, body);
        assert_eq!(status, expect, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }
}

/// One `hearth serve` child.
pub struct Serve {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Host {
    /// A host whose servers run with `args` (after the defaults
    /// `--tick-ms 200 --rate-limit 100000 --rate-window 1`).
    pub fn new(args: &[&str]) -> Host {
        ensure_assets("minimal");
        let work = tempfile::Builder::new()
            .prefix("hearth-serve-test-")
            .tempdir()
            .expect("temp dir");
        let data = work.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        for shared in ["kernels", "images", "cache", "locks"] {
            let target = data_dir().join(shared);
            std::fs::create_dir_all(&target).expect("shared dir");
            std::os::unix::fs::symlink(&target, data.join(shared)).expect("symlink");
        }
        let mut serve_args: Vec<String> = ["--tick-ms", "200", "--rate-limit", "100000"]
            .iter()
            .chain(&["--rate-window", "1"])
            .map(|s| s.to_string())
            .collect();
        serve_args.extend(args.iter().map(|s| s.to_string()));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Host {
            work,
            serve: None,
            serve_args,
            starts: 0,
            admin_token: None,
            agent,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.work.path().join("data")
    }

    /// More arguments for the servers started from now on (for ones that
    /// name files in the data directory).
    pub fn add_serve_args(&mut self, args: &[&str]) {
        self.serve_args.extend(args.iter().map(|s| s.to_string()));
    }

    /// `<data>/vms/`: every hypervisor of this host names it.
    pub fn vms_dir(&self) -> PathBuf {
        self.data().join("vms")
    }

    /// `hearth --data-dir <data> ARGS...`, not yet run.
    pub fn hearth(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
        cmd.arg("--data-dir").arg(self.data()).args(args);
        cmd.env_remove("HEARTH_URL").env_remove("HEARTH_TOKEN");
        cmd
    }

    /// Starts `hearth serve` on a free port and waits for /healthz.
    pub fn start(&mut self) -> &Serve {
        assert!(self.serve.is_none(), "a server is already running");
        for _attempt in 0..3 {
            let port = free_port();
            self.starts += 1;
            let log = self.work.path().join(format!("serve-{}.log", self.starts));
            let child = self
                .hearth(&["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args(&self.serve_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("hearth serve starts");
            let mut serve = Serve {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log,
            };
            match self.wait_healthy(&mut serve) {
                Ok(()) => {
                    self.serve = Some(serve);
                    return self.serve.as_ref().expect("just set");
                }
                // Someone took the port between our probe and the bind.
                Err(log) if log.contains("could not listen") => continue,
                Err(log) => panic!("hearth serve did not come up:\n{log}"),
            }
        }
        panic!("hearth serve could not find a free port");
    }

    fn wait_healthy(&self, serve: &mut Serve) -> Result<(), String> {
        let deadline = Instant::now() + SERVE_START;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = serve.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", read(&serve.log)));
            }
            let url = format!("{}/healthz", serve.url);
            if let Ok(res) = self.agent.get(&url).call() {
                if res.status() == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(POLL);
        }
        let _ = serve.child.kill();
        let _ = serve.child.wait();
        Err(format!(
            "no answer within {SERVE_START:?}:\n{}",
            read(&serve.log)
        ))
    }

    pub fn serve(&self) -> &Serve {
        self.serve.as_ref().expect("hearth serve is running")
    }

    pub fn serve_pid(&self) -> u32 {
        self.serve().child.id()
    }

    /// Everything every server of this host logged so far.
    pub fn serve_logs(&self) -> String {
        (1..=self.starts)
            .map(|n| read(&self.work.path().join(format!("serve-{n}.log"))))
            .collect::<Vec<_>>()
            .join("\n--- next start\n")
    }

    /// `kill -9` of the server; its VMs are left as they are.
    pub fn kill_serve(&mut self) {
        let mut serve = self.serve.take().expect("a server to kill");
        serve.child.kill().expect("SIGKILL");
        serve.child.wait().expect("reaped");
    }

    /// SIGTERM to the server; its exit status (it must end within 20 s).
    pub fn stop_serve(&mut self) -> ExitStatus {
        let mut serve = self.serve.take().expect("a server to stop");
        signal(serve.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = serve.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = serve.child.kill();
                panic!(
                    "hearth serve ignored SIGTERM for 20 s:\n{}",
                    self.serve_logs()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// An admin token, minted once per host.
    pub fn admin_token(&mut self) -> String {
        if self.admin_token.is_none() {
            self.admin_token = Some(self.mint(&["--admin"]));
        }
        self.admin_token.clone().expect("just set")
    }

    /// `hearth token create ARGS`: the token it printed.
    pub fn mint(&self, args: &[&str]) -> String {
        let mut full = vec!["token", "create"];
        full.extend_from_slice(args);
        let out = self.hearth(&full).output().expect("hearth runs");
        assert!(out.status.success(), "{}", super::text(&out));
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "token create printed more than the token");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains(lines[0]),
            "the token leaked to stderr: {stderr}"
        );
        lines[0].to_owned()
    }

    /// `hearth vm ARGS...` against the server, as admin.
    pub fn vm_cli(&mut self, args: &[&str]) -> Output {
        let token = self.admin_token();
        self.vm_cli_as(&token, args)
    }

    pub fn vm_cli_as(&self, token: &str, args: &[&str]) -> Output {
        let mut full = vec!["vm"];
        full.extend_from_slice(args);
        self.hearth(&full)
            .env("HEARTH_URL", &self.serve().url)
            .env("HEARTH_TOKEN", token)
            .output()
            .expect("hearth runs")
    }

    /// `hearth vm ARGS...` that must succeed; its stdout.
    pub fn vm_ok(&mut self, args: &[&str]) -> String {
        let out = self.vm_cli(args);
        assert!(
            out.status.success(),
            "hearth vm {args:?}: {}\n--- serve\n{}",
            super::text(&out),
            self.serve_logs()
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// `hearth vm create ARGS...`: the new VM's id.
    pub fn create(&mut self, args: &[&str]) -> String {
        let mut full = vec!["create"];
        full.extend_from_slice(args);
        self.vm_ok(&full).trim().to_owned()
    }

    /// The API over HTTP as admin; cheap to clone into threads.
    /// `hearth vm port-forward ID PORTS...` running as admin, with its
    /// stdout and stderr piped: the child and the local port of each pair,
    /// from its `forwarding ADDR to ...` lines.
    pub fn port_forward(&mut self, id: &str, pairs: &[&str]) -> (Child, Vec<u16>) {
        use std::io::{BufRead, BufReader};
        let api = self.api();
        let mut args = vec!["vm", "port-forward", id];
        args.extend_from_slice(pairs);
        let mut child = self
            .hearth(&args)
            .env("HEARTH_URL", &api.url)
            .env("HEARTH_TOKEN", &api.token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("hearth runs");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let ports = pairs
            .iter()
            .map(|_| {
                let line = lines.next().expect("a forwarding line").expect("text");
                let addr = line.split_whitespace().nth(1).expect("an address");
                addr.rsplit(':').next().unwrap().parse().expect("a port")
            })
            .collect();
        (child, ports)
    }

    pub fn api(&mut self) -> Api {
        Api {
            url: self.serve().url.clone(),
            token: self.admin_token(),
            agent: self.agent.clone(),
        }
    }

    /// GET `path` as admin: status and body.
    pub fn get(&mut self, path: &str) -> (u16, String) {
        self.api().call("GET", path, None)
    }

    /// The VM as the API shows it now.
    pub fn vm(&mut self, id: &str) -> Vm {
        let (status, body) = self.get(&format!("/v1/vms/{id}"));
        assert_eq!(status, 200, "GET /v1/vms/{id}: {body}");
        serde_json::from_str(&body).expect("a Vm")
    }

    /// Polls the VM until `done` holds; panics with the server's log after
    /// `within`.
    pub fn wait_vm(&mut self, id: &str, within: Duration, done: impl Fn(&Vm) -> bool) -> Vm {
        let deadline = Instant::now() + within;
        loop {
            let vm = self.vm(id);
            if done(&vm) {
                return vm;
            }
            if Instant::now() > deadline {
                panic!(
                    "{id} still {} (failure {:?}) after {within:?}\n--- serve\n{}",
                    vm.state,
                    vm.failure,
                    self.serve_logs()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn wait_state(&mut self, id: &str, state: VmState, within: Duration) -> Vm {
        self.wait_vm(id, within, |vm| vm.state == state)
    }

    /// Hypervisor processes of this host (their command line names `<data>/vms/`).
    pub fn hypervisors(&self) -> Vec<u32> {
        processes_mentioning(&self.vms_dir().join(""))
    }

    /// The hypervisor of one VM.
    pub fn hypervisor_of(&self, id: &str) -> Option<u32> {
        processes_mentioning(&self.vms_dir().join(id).join(""))
            .into_iter()
            .next()
    }

    /// Entries under `<data>/vms/`.
    pub fn vm_dirs(&self) -> Vec<PathBuf> {
        list(&self.vms_dir())
    }

    /// Writable layers (raw ext4, and the encrypted qcow2 disks of
    /// persistent VMs) anywhere in the private part of the data directory.
    pub fn layers(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        find_ext4(&self.data(), &mut found);
        found
    }

    /// No hypervisor, VM directory or writable layer is left.
    pub fn assert_clean(&self) {
        let left = self.hypervisors();
        assert!(left.is_empty(), "hypervisors left: {left:?}");
        let dirs = self.vm_dirs();
        assert!(dirs.is_empty(), "VM directories left: {dirs:?}");
        let layers = self.layers();
        assert!(layers.is_empty(), "writable layers left: {layers:?}");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut serve) = self.serve.take() {
            let _ = serve.child.kill();
            let _ = serve.child.wait();
        }
        for pid in self.hypervisors() {
            signal(pid, libc::SIGKILL);
        }
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid this test started or found naming its own
    // private data directory.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The process exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 2..];
            rest.split_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    list(Path::new(&format!("/proc/{pid}/fd"))).len()
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `*.ext4` files under `dir`, not following symlinks (the shared images).
fn find_ext4(dir: &Path, found: &mut Vec<PathBuf>) {
    for path in list(dir) {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            find_ext4(&path, found);
        } else if path
            .extension()
            .is_some_and(|e| e == "ext4" || e == "qcow2")
        {
            found.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text
}
