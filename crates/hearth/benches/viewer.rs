//! The viewer's numbers, on one `browser` VM under QEMU (TCG here):
//!
//! - boot to desktop-ready (create to `ready`: display, window manager,
//!   VNC server and Chromium's window up);
//! - opening a viewer link in real headless Chromium to the first frame
//!   drawn on its canvas (and to the RFB session's `connect`);
//! - a keystroke's round trip: a key pressed and released in the guest
//!   browser's focused text field, to the framebuffer update that shows
//!   it, through the viewer's WebSocket (`/v1/vms/{id}/vnc`) against the
//!   same RFB client on the host end of `hearth vm port-forward ID :5900`.
//!   Alternating, the ratio of the medians.
//!
//! `cargo bench -p hearth --bench viewer` (KEYS, default 30; OPENS, 3).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::serve::Host;
use common::webdriver::Browser;
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

const PAGE: &str = "<!doctype html><html><head><title>keys</title></head>\
<body style='margin:0;background:#fff'>\
<input id=t autofocus style='position:absolute;left:20%;top:55%;width:60%;height:30%;font-size:40px'>\
</body></html>";

fn main() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let Some(browser) = Browser::start(1280, 800) else {
        return;
    };
    common::ensure_assets("browser");
    let mut host = Host::new(&[]);
    host.start();
    let config = serde_json::json!({
        "files": [{"path": "/srv/keys/index.html", "content": PAGE}],
        "services": [{"name": "page", "argv": ["busybox", "httpd", "-f", "-p", "127.0.0.1:8000", "-h", "/srv/keys"],
                      "readiness": {"kind": "tcp", "port": 8000}}],
        "env": [{"name": "HEARTH_BROWSER_URL", "value": "http://127.0.0.1:8000/"}]
    });
    let file = host.data().join("keys.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let t = Instant::now();
    let id = host.create(&[
        "--image",
        "browser",
        "--config",
        file.to_str().unwrap(),
        "--wait",
        "ready",
        "--timeout",
        "600",
    ]);
    let booted = t.elapsed();
    println!(
        "browser image, create to desktop-ready: {:.1} s",
        booted.as_secs_f64()
    );

    first_frames(&mut host, &browser, &id, env_number("OPENS", 3));
    drop(browser);
    keystrokes(&mut host, &id, env_number("KEYS", 30));
    host.vm_ok(&["rm", &id]);
}

/// Opening a viewer link to the RFB connect and to the first frame drawn.
fn first_frames(host: &mut Host, browser: &Browser, id: &str, opens: usize) {
    let (mut connected, mut drawn) = (Vec::new(), Vec::new());
    for _ in 0..opens {
        let out = host.vm_cli(&["view", id]);
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        browser.open("about:blank");
        let t = Instant::now();
        browser.open(&url);
        browser.wait_for(
            Duration::from_secs(60),
            "connect",
            "return document.getElementById('status').classList.contains('hidden')",
        );
        connected.push(t.elapsed());
        browser.wait_for(Duration::from_secs(60), "a frame", DRAWN);
        drawn.push(t.elapsed());
    }
    println!(
        "viewer link opened to RFB connect, median of {opens}: {:.0} ms; to the first frame drawn: {:.0} ms",
        ms(median(&mut connected)),
        ms(median(&mut drawn))
    );
}

/// True once the canvas shows anything but black.
const DRAWN: &str = "const c = document.querySelector('#screen canvas'); if (!c || !c.width) return false; \
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
for (let i = 0; i < d.length; i += 4096) { if (d[i] || d[i + 1] || d[i + 2]) return true; } return false;";

fn keystrokes(host: &mut Host, id: &str, keys: usize) {
    let api = host.api();
    let ws_url = format!(
        "{}/v1/vms/{id}/vnc",
        api.url.replacen("http://", "ws://", 1)
    );
    let mut request = ws_url.into_client_request().unwrap();
    let bearer = format!("Bearer {}", api.token).parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let (ws, _) = tungstenite::connect(request).expect("the VNC WebSocket");
    let mut viewer = Rfb::start(Box::new(WsWire {
        ws,
        buf: Vec::new(),
    }));

    let (mut forward, ports) = host.port_forward(id, &[":5900"]);
    let port = ports[0];
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut direct = Rfb::start(Box::new(TcpWire {
        tcp,
        buf: Vec::new(),
    }));

    direct.click(640, 520);
    let (mut through_viewer, mut through_forward) = (Vec::new(), Vec::new());
    for i in 0..keys {
        let key = u32::from(b'a' + (i % 26) as u8);
        through_viewer.push(viewer.key_round_trip(key));
        through_forward.push(direct.key_round_trip(key));
    }
    let _ = forward.kill();
    let _ = forward.wait();
    let (v, f) = (median(&mut through_viewer), median(&mut through_forward));
    println!(
        "a keystroke to its framebuffer update, median of {keys}: viewer WebSocket {:.1} ms, VNC client on port-forward {:.1} ms, ratio {:.2}",
        ms(v),
        ms(f),
        ms(v) / ms(f)
    );
}

/// A byte stream an RFB client runs over.
trait Wire {
    fn send(&mut self, bytes: &[u8]);
    fn fill(&mut self) -> Vec<u8>;
    fn buffer(&mut self) -> &mut Vec<u8>;

    fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buffer().len() < n {
            let more = self.fill();
            self.buffer().extend(more);
        }
        self.buffer().drain(..n).collect()
    }
}

struct TcpWire {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Wire for TcpWire {
    fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).unwrap();
    }
    fn fill(&mut self) -> Vec<u8> {
        let mut b = vec![0u8; 1 << 16];
        let n = self.tcp.read(&mut b).unwrap();
        assert!(n > 0, "the forwarded VNC stream ended");
        b.truncate(n);
        b
    }
    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

struct WsWire {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    buf: Vec<u8>,
}

impl Wire for WsWire {
    fn send(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .unwrap();
    }
    fn fill(&mut self) -> Vec<u8> {
        loop {
            match self.ws.read().unwrap() {
                Message::Binary(b) => return b.to_vec(),
                Message::Close(f) => panic!("the VNC WebSocket closed: {f:?}"),
                _ => {}
            }
        }
    }
    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

/// Just enough of an RFB 3.8 client: no security, raw encoding.
struct Rfb {
    wire: Box<dyn Wire>,
    width: u16,
    height: u16,
    bytes_per_pixel: usize,
}

impl Rfb {
    fn start(mut wire: Box<dyn Wire>) -> Rfb {
        let version = wire.read(12);
        assert!(version.starts_with(b"RFB 003."), "{version:?}");
        wire.send(b"RFB 003.008\n");
        let count = wire.read(1)[0] as usize;
        assert!(
            wire.read(count).contains(&1),
            "no \"none\" security offered"
        );
        wire.send(&[1]);
        assert_eq!(wire.read(4), [0, 0, 0, 0], "security refused");
        wire.send(&[1]);
        let init = wire.read(24);
        let name_len = u32::from_be_bytes(init[20..24].try_into().unwrap()) as usize;
        wire.read(name_len);
        let mut rfb = Rfb {
            wire,
            width: u16::from_be_bytes([init[0], init[1]]),
            height: u16::from_be_bytes([init[2], init[3]]),
            bytes_per_pixel: usize::from(init[4] / 8),
        };
        rfb.wire.send(&[2, 0, 0, 1, 0, 0, 0, 0]);
        rfb.request(false);
        rfb.read_update();
        rfb
    }

    fn request(&mut self, incremental: bool) {
        let [w0, w1] = self.width.to_be_bytes();
        let [h0, h1] = self.height.to_be_bytes();
        self.wire
            .send(&[3, u8::from(incremental), 0, 0, 0, 0, w0, w1, h0, h1]);
    }

    /// Reads messages until a framebuffer update, and reads it whole.
    fn read_update(&mut self) {
        loop {
            match self.wire.read(1)[0] {
                0 => break,
                2 => {}
                3 => {
                    let h = self.wire.read(7);
                    let len = u32::from_be_bytes(h[3..7].try_into().unwrap()) as usize;
                    self.wire.read(len);
                }
                other => panic!("RFB message {other} not understood"),
            }
        }
        let h = self.wire.read(3);
        let rects = u16::from_be_bytes([h[1], h[2]]);
        for _ in 0..rects {
            let r = self.wire.read(12);
            let (w, hh) = (
                u16::from_be_bytes([r[4], r[5]]),
                u16::from_be_bytes([r[6], r[7]]),
            );
            let encoding = i32::from_be_bytes(r[8..12].try_into().unwrap());
            assert_eq!(encoding, 0, "only raw rectangles were asked for");
            self.wire
                .read(usize::from(w) * usize::from(hh) * self.bytes_per_pixel);
        }
    }

    fn click(&mut self, x: u16, y: u16) {
        let [x0, x1] = x.to_be_bytes();
        let [y0, y1] = y.to_be_bytes();
        self.wire.send(&[5, 1, x0, x1, y0, y1]);
        self.wire.send(&[5, 0, x0, x1, y0, y1]);
        std::thread::sleep(Duration::from_millis(500));
    }

    /// A key pressed and released, to the update that follows.
    fn key_round_trip(&mut self, keysym: u32) -> Duration {
        let k = keysym.to_be_bytes();
        self.request(true);
        let t = Instant::now();
        self.wire.send(&[4, 1, 0, 0, k[0], k[1], k[2], k[3]]);
        self.wire.send(&[4, 0, 0, 0, k[0], k[1], k[2], k[3]]);
        self.read_update();
        let took = t.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        took
    }
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
