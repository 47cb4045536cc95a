//! A real server for the API tests: a [`Controller`] over a SQLite file in
//! a fresh data directory, served on 127.0.0.1:0 and spoken to over HTTP.
//! Servers that boot VMs link the suite's shared kernels and images into
//! their data directory, made once by hearth's own build locks.

#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_control::controller::{Controller, ControllerConfig};
use hearth_guestkit::image::ImageName;
use hearth_guestkit::DataDir;
use hearth_server::{mint_token, ServerConfig, ServerError};
use hearth_store::{SqliteStore, VmRecord};
use hearth_types::api::{ApiError, CreateVm, Vm};
use hearth_types::{TenantId, Timestamp, VmId, VmState};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and what it runs on.
pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub controller: Arc<Controller>,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), ServerError>>>,
    reconcilers: Option<JoinHandle<()>>,
    /// Dropped last: kills the hypervisors of VMs a failed test left.
    pub dir: hearth_testkit::PrivateDir,
}

/// A server without kernels or images, for requests that boot nothing.
pub async fn server(config: ServerConfig) -> Server {
    start(config, false, false).await
}

/// A server without kernels or images but with login sessions: the
/// built-in providers, a vault in its data directory.
pub async fn session_server() -> Server {
    session_server_with(ServerConfig::default()).await
}

/// [`session_server`] with `config`.
pub async fn session_server_with(config: ServerConfig) -> Server {
    start(config, false, true).await
}

/// A server whose data directory has the shared kernel and minimal image,
/// with its reconcilers running.
pub async fn vm_server() -> Server {
    start(ServerConfig::default(), true, false).await
}

async fn start(mut config: ServerConfig, vms: bool, sessions: bool) -> Server {
    init_logs();
    let dir = hearth_testkit::PrivateDir::new("hearth-server-");
    if vms {
        let root = dir.path().to_owned();
        tokio::task::spawn_blocking(move || link_shared_assets(&root))
            .await
            .expect("assets task");
    }
    let data = DataDir::new(dir.path());
    let store = SqliteStore::open(&data.store_file()).expect("store opens");
    let mut cc = ControllerConfig::new(data);
    cc.tick = Duration::from_millis(200);
    cc.grace = Duration::from_secs(5);
    let store = Arc::new(store);
    let controller = Controller::new(store.clone(), cc);
    if sessions {
        let keys = hearth_vault::KeyFile::in_data_dir(dir.path());
        let vault = Arc::new(hearth_vault::Vault::new(keys, store));
        let settings = hearth_sessions::EgressSettings::system();
        config.sessions = Some(hearth_sessions::Sessions::new(
            controller.clone(),
            vault,
            hearth_sessions::Catalogue::builtin(),
            hearth_sessions::SessionsConfig::new(settings),
        ));
    }
    let reconcilers = if vms {
        Some(controller.start().await)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel();
    let shutdown = async move {
        let _ = rx.await;
    };
    let ctl = Arc::clone(&controller);
    let task = tokio::spawn(hearth_server::serve_on(listener, ctl, config, shutdown));
    Server {
        base,
        controller,
        http: reqwest::Client::new(),
        shutdown: Some(tx),
        task: Some(task),
        reconcilers,
        dir,
    }
}

/// The server's and the controller's logs, shown with a failing test's
/// output (`RUST_LOG` overrides the default).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "hearth_server=info,hearth_control=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Makes sure the shared data dir has the kernel and the minimal image,
/// then links them into `root`.
fn link_shared_assets(root: &Path) {
    let shared = hearth_testkit::test_data_dir();
    let data = DataDir::new(&shared);
    hearth_guestkit::kernel::fetch_debian_cloud_kernel(&data, &mut |_| {})
        .expect("kernel fetch (see `hearth kernel fetch`)");
    hearth_guestkit::image::ensure_image(
        &data,
        ImageName::Minimal,
        false,
        shared_agent(),
        &mut |_| {},
    )
    .expect("minimal image builds (see `hearth image build minimal`)");
    for name in ["kernels", "images", "cache", "locks"] {
        let target = shared.join(name);
        std::fs::create_dir_all(&target).expect("shared dir");
        std::os::unix::fs::symlink(&target, root.join(name)).expect("symlink");
    }
}

impl Server {
    /// A VM record of `tenant`, requested and never booted.
    pub async fn stored_vm(&self, tenant: &str) -> VmId {
        let id = VmId::generate();
        let now = Timestamp::now();
        let record = VmRecord::requested(
            id.clone(),
            tenant.parse().expect("tenant"),
            &CreateVm::default(),
            now,
            now.plus(Duration::from_secs(60)),
        );
        self.controller
            .store()
            .insert_vm(&record)
            .await
            .expect("VM stored");
        id
    }

    /// A token for `tenant`, stored; the secret.
    pub async fn token(&self, tenant: &str, admin: bool) -> String {
        let tenant: TenantId = tenant.parse().expect("tenant");
        let (secret, record) = mint_token(tenant, admin);
        self.controller
            .store()
            .insert_token(&record)
            .await
            .expect("token stored");
        secret
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET")
    }

    pub async fn post(&self, token: &str, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST")
    }

    pub async fn put(&self, token: &str, path: &str, body: &str) -> reqwest::Response {
        self.http
            .put(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("PUT")
    }

    pub async fn delete(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("DELETE")
    }

    /// GET a VM until `done` holds for it, at most `limit`.
    pub async fn wait_vm(
        &self,
        token: &str,
        id: &str,
        limit: Duration,
        done: impl Fn(&Vm) -> bool,
    ) -> Vm {
        let started = Instant::now();
        loop {
            let vm: Vm = ok_json(self.get(token, &format!("/v1/vms/{id}")).await).await;
            if done(&vm) {
                return vm;
            }
            if started.elapsed() > limit {
                let console = self
                    .get(token, &format!("/v1/vms/{id}/console?lines=30"))
                    .await
                    .text()
                    .await
                    .unwrap_or_default();
                panic!(
                    "VM {id} still {:?} after {limit:?}: {vm:?}\nconsole: {console}",
                    vm.state
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_state(&self, token: &str, id: &str, state: VmState, limit: Duration) -> Vm {
        self.wait_vm(token, id, limit, |vm| {
            assert!(
                vm.state == state || vm.state != VmState::Failed,
                "VM {id} failed: {:?}",
                vm.failure
            );
            vm.state == state
        })
        .await
    }

    /// Stops serving and waits for `serve_on` to return.
    pub async fn shut_down(&mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.reconcilers.take() {
            r.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // `dir`, dropped after this, kills the VMs' hypervisors.
    }
}

/// The body of a 2xx response, parsed; panics with the body otherwise.
pub async fn ok_json<T: serde::de::DeserializeOwned>(r: reqwest::Response) -> T {
    let status = r.status();
    let text = r.text().await.expect("body");
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// An error response: its status, the `ApiError`, and the raw text.
pub async fn api_error(r: reqwest::Response) -> (u16, ApiError, String) {
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let text = r.text().await.expect("body");
    assert!(
        content_type.starts_with("application/json"),
        "{status} {content_type}: {text}"
    );
    let error: ApiError = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(!error.message.is_empty(), "{text}");
    (status, error, text)
}

/// Runs `f` under a deadline.
pub async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {limit:?}"))
}

/// The median of some durations, in milliseconds.
pub fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

/// The agent the shared minimal image is built with, the same one every
/// test process names (as `scripts/test` does); without static glibc to
/// build it, an image without the agent, said so.
fn shared_agent() -> hearth_guestkit::image::AgentChoice {
    use hearth_guestkit::image::AgentChoice;
    match hearth_testkit::static_agent() {
        Some(agent) => {
            if std::env::var_os("HEARTH_AGENT").is_none() {
                std::env::set_var("HEARTH_AGENT", agent);
            }
            AgentChoice::Find
        }
        None => AgentChoice::Without,
    }
}

/// Tries a WebSocket handshake on `path` (with `token`, if any), which the
/// server must refuse: the HTTP status and the error it was refused with.
pub async fn websocket_refused(
    server: &Server,
    token: Option<&str>,
    path: &str,
) -> (u16, ApiError) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
    use tokio_tungstenite::tungstenite::Error as WsError;
    let url = server.url(path).replacen("http://", "ws://", 1);
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade to {path} was accepted"),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let error = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
            (response.status().as_u16(), error)
        }
        Err(e) => panic!("{e}"),
    }
}
