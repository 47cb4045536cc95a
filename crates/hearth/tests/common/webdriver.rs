//! A real browser for tests: Debian's headless Chromium driven over W3C
//! WebDriver by Debian's `chromedriver` (both installed by
//! scripts/setup-host; never a downloaded build). Just the few commands
//! the viewer's tests use: open a page, run a script, find an element,
//! take a screenshot, click and type.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver and one headless Chromium session of it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    /// `None` (with a line saying why) where Chromium or its driver is
    /// missing.
    pub fn start(width: u32, height: u32) -> Option<Browser> {
        for tool in [CHROMIUM, DRIVER] {
            if !std::path::Path::new(tool).exists() {
                println!("skipped: {tool} is not installed (scripts/setup-host installs chromium and chromium-driver)");
                return None;
            }
        }
        let port = free_port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        wait_until(Duration::from_secs(20), "chromedriver to answer", || {
            ureq::get(&format!("{base}/status")).call().is_ok()
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", format!("--window-size={width},{height}")]
            }
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
        };
        let answer = browser.call("POST", "/session", Some(&caps));
        browser.session = answer["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Some(browser)
    }

    pub fn open(&self, url: &str) {
        self.session_call("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn script(&self, script: &str, args: Value) -> Value {
        let body = json!({"script": script, "args": args});
        self.session_call("POST", "/execute/sync", Some(&body))
    }

    /// Polls `script` until it returns true, at most `within`.
    pub fn wait_for(&self, within: Duration, what: &str, script: &str) {
        wait_until(within, what, || {
            self.script(script, json!([])) == json!(true)
        });
    }

    /// The first element matching the CSS `selector`.
    pub fn element(&self, selector: &str) -> Value {
        let body = json!({"using": "css selector", "value": selector});
        self.session_call("POST", "/element", Some(&body))
    }

    /// The page as a PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.session_call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64 text"))
            .expect("a base64 PNG")
    }

    /// A left click at (`x`, `y`) from the centre of `element`.
    pub fn click(&self, element: &Value, x: i64, y: i64) {
        let origin = json!({ ELEMENT: element[ELEMENT] });
        let actions = json!({"actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "origin": origin, "x": x, "y": y, "duration": 50},
                {"type": "pointerDown", "button": 0},
                {"type": "pause", "duration": 80},
                {"type": "pointerUp", "button": 0}
            ]
        }]});
        self.session_call("POST", "/actions", Some(&actions));
    }

    /// Types `text` as key presses into whatever has the focus.
    pub fn type_text(&self, text: &str) {
        let mut keys = Vec::new();
        for c in text.chars() {
            keys.push(json!({"type": "keyDown", "value": c.to_string()}));
            keys.push(json!({"type": "pause", "duration": 30}));
            keys.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": keys}]});
        self.session_call("POST", "/actions", Some(&actions));
    }

    fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let answer = match (method, body) {
            ("GET", _) => agent.get(&url).call(),
            ("DELETE", _) => agent.delete(&url).call(),
            (_, body) => {
                let text = body.map_or_else(|| "{}".to_owned(), Value::to_string);
                agent
                    .post(&url)
                    .content_type("application/json")
                    .send(text.as_bytes())
            }
        };
        let mut answer = answer.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = answer.status().as_u16();
        let text = answer.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(status < 400, "WebDriver {method} {path}: {status} {text}");
        value["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.call("DELETE", &path, None)
            }));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// An RGB image decoded from a PNG: (width, height, pixels as RGB).
pub fn decode_png(png_bytes: &[u8]) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}
