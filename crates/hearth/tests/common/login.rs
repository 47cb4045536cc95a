//! A login session's rig, for `vm_login` and `benches/login`: the fake
//! OAuth provider on the host, a `hearth serve` whose egress reaches it by
//! name (and nothing else), the fake Codex as an operator-defined provider
//! on the `login-test` image, and the steps a person takes: start a
//! session, open its viewer link, wait for the consent page, click.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_testkit::fake_oauth::FakeOAuth;
use hearth_types::session::Session;

use super::serve::{Api, Host};
use super::webdriver::{decode_png, Browser};

/// The fake provider's consent page: one button over the whole page.
pub const BUTTON_BLUE: [u8; 3] = [43, 108, 176];
/// The name the VM reaches the fake provider by.
pub const PROVIDER_HOST: &str = "auth.fake-provider.test";
/// The user and tenant of the rig's sessions.
pub const USER: &str = "alice@example.com";
pub const TENANT: &str = "team-a";

/// The test recipe: the browser image with python3 and fake-codex.
pub fn recipe() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    dir.join("login-test.toml").display().to_string()
}

/// The fake Codex as an operator would add it: Codex's entry, with the
/// test image and the fake provider's address.
pub fn provider_entry(issuer: &str) -> String {
    format!(
        r#"
name = "fake-codex"
description = "Codex CLI's login against the tests' fake provider"
image = "login-test"
login = ["fake-codex", "login"]
opens_browser_with = "browser-env"
env = {{ FAKE_OAUTH_ISSUER = "{issuer}" }}
domains = ["{PROVIDER_HOST}"]

[capture]
stable_ms = 1000

[[capture.files]]
path = ".codex/auth.json"
required_keys = ["/tokens/access_token", "/tokens/refresh_token"]
"#
    )
}

/// The provider, a server that reaches it, and a tenant's API.
pub struct Rig {
    pub fake: FakeOAuth,
    pub host: Host,
    pub api: Api,
    _providers: tempfile::TempDir,
}

impl Rig {
    /// Builds the images (cached), starts the fake provider and the
    /// server; `egress` adds `hearth serve` arguments.
    pub fn start(extra: &[&str]) -> Rig {
        super::ensure_assets("browser");
        super::ensure_assets(&recipe());
        let fake = FakeOAuth::start().expect("the fake provider starts");
        let port = fake.addr().port().to_string();
        let issuer = format!("http://{PROVIDER_HOST}:{port}");
        let providers = tempfile::tempdir().unwrap();
        let entry = providers.path().join("fake-codex.toml");
        std::fs::write(entry, provider_entry(&issuer)).unwrap();
        let pin = format!("{PROVIDER_HOST}=127.0.0.1");
        let mut args = vec![
            "--providers",
            providers.path().to_str().unwrap(),
            "--egress-host",
            &pin,
            "--egress-allow-network",
            "127.0.0.1/32",
            "--egress-port",
            &port,
        ];
        args.extend_from_slice(extra);
        let mut host = Host::new(&args);
        host.start();
        let mut api = host.api();
        api.token = host.mint(&["--tenant", TENANT]);
        Rig {
            fake,
            host,
            api,
            _providers: providers,
        }
    }

    /// `POST /v1/sessions` for the rig's user.
    pub fn start_session(&self) -> Session {
        let body = format!(r#"{{"user": "{USER}", "provider": "fake-codex", "ttl_secs": 1800}}"#);
        self.api.json("POST", "/v1/sessions", Some(&body), 201)
    }

    pub fn wait(&self, id: &str, within: Duration, done: impl Fn(&Session) -> bool) -> Session {
        let deadline = Instant::now() + within;
        loop {
            let s: Session = self
                .api
                .json("GET", &format!("/v1/sessions/{id}"), None, 200);
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "session {id} never got there: {s:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Opens the viewer link and waits for the consent page on it (served
    /// by the fake provider at some point, and blue on the screen now);
    /// the canvas to click. A viewer whose screen shows no consent page
    /// for a while is opened again, in case its connection went stale on
    /// a loaded host.
    pub fn open_consent_page(
        &self,
        browser: &Browser,
        link: &str,
        within: Duration,
    ) -> serde_json::Value {
        const REOPEN: Duration = Duration::from_secs(90);
        let connect = |browser: &Browser| {
            browser.open(link);
            browser.wait_for(
                Duration::from_secs(60),
                "the viewer to connect",
                "return document.getElementById('status').classList.contains('hidden')",
            );
            Instant::now()
        };
        let mut opened = connect(browser);
        let deadline = Instant::now() + within;
        loop {
            let blue = blue_share(&browser.screenshot());
            if self.fake.pages_served() > 0 && blue > 0.5 {
                return browser.element("#screen canvas");
            }
            assert!(
                Instant::now() < deadline,
                "the consent page never showed: {} pages served, {:.0}% of the screen blue",
                self.fake.pages_served(),
                blue * 100.0
            );
            if opened.elapsed() > REOPEN {
                println!("no consent page on the viewer after {REOPEN:?}: opening it again");
                opened = connect(browser);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The vault's current credential of the rig's user, opened here:
    /// the path, mode and bytes of its one file.
    pub fn open_credential(&self) -> (String, u32, Vec<u8>) {
        open_credential(&self.host.data())
    }

    pub fn data(&self) -> PathBuf {
        self.host.data()
    }
}

/// How much of a screenshot is the consent page's blue.
pub fn blue_share(png: &[u8]) -> f64 {
    let (_, _, pixels) = decode_png(png);
    let close = |p: &[u8; 3]| p.iter().zip(BUTTON_BLUE).all(|(a, b)| a.abs_diff(b) <= 24);
    pixels.iter().filter(|p| close(p)).count() as f64 / pixels.len() as f64
}

pub fn open_credential(data: &Path) -> (String, u32, Vec<u8>) {
    let store = hearth_store::SqliteStore::open(&data.join("hearth.db")).expect("store");
    let keys = hearth_vault::KeyFile::in_data_dir(data);
    let vault = hearth_vault::Vault::new(keys, Arc::new(store));
    let owner = hearth_store::CredentialOwner {
        tenant: TENANT.parse().unwrap(),
        user: USER.parse().unwrap(),
        provider: "fake-codex".parse().unwrap(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let opened = runtime
        .block_on(vault.open_current(&owner))
        .expect("the credential opens")
        .expect("there is a credential");
    assert_eq!(opened.files.files.len(), 1);
    let file = &opened.files.files[0];
    (
        file.path.clone(),
        file.mode,
        file.contents.expose().to_vec(),
    )
}
