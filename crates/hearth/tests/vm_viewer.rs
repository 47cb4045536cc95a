//! The viewer end to end, as a person uses it: a real `hearth serve`, a VM
//! of the `browser` image under QEMU (no guest NIC), a page served inside
//! the guest and shown by the guest's Chromium, and a real headless
//! Chromium on the host opening the viewer link. The screen's pixels are
//! the guest page's; a click and typed text reach the guest page (which
//! records them); the guest's clock is the host's; a revoked or expired
//! link closes the screen and the page says why.

mod common;

use std::time::{Duration, Instant};

use common::serve::Host;
use common::text;
use common::webdriver::{decode_png, Browser};

/// The guest page's background, and its text's colour.
const GREEN: [u8; 3] = [18, 160, 92];
const WHITE: [u8; 3] = [255, 255, 255];

const PAGE: &str = r#"<!doctype html>
<html><head><title>hearth viewer test</title>
<style>
html, body { margin: 0; height: 100%; background: #12a05c; color: #fff; font: bold 72px sans-serif; }
#words { position: absolute; top: 15%; width: 100%; text-align: center; }
#typed { position: absolute; left: 20%; top: 55%; width: 60%; height: 30%; font-size: 40px; }
</style></head>
<body><div id="words">HEARTH VIEWER TEST</div><input id="typed" autocomplete="off">
<script>
function record(what) { fetch('/cgi-bin/record?' + encodeURIComponent(what)); }
document.addEventListener('mousedown', (e) => record('click ' + e.clientX + ' ' + e.clientY));
document.getElementById('typed').addEventListener('input', (e) => record('typed ' + e.target.value));
</script></body></html>
"#;

const RECORDER: &str = "#!/bin/sh\n\
printf '%s\\n' \"$QUERY_STRING\" >> /tmp/page-record.log\n\
printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n";

fn config() -> serde_json::Value {
    // The image's browser service, waiting for the page's server too, and
    // opening the page at its start.
    let browser = serde_json::json!({
        "name": "browser",
        "argv": ["sh", "-c", "exec /usr/local/bin/hearth-browser --kiosk \"${HEARTH_BROWSER_URL:-about:blank}\""],
        "user": "hearth",
        "env": [{"name": "HOME", "value": "/home/hearth"}],
        "readiness": {"kind": "command", "argv": ["sh", "-c", "xwininfo -display :0 -root -tree | grep -qi '\"chromium\"'"]},
        "after": ["display", "window-manager", "vnc", "page"]
    });
    serde_json::json!({
        "env": [{"name": "HEARTH_BROWSER_URL", "value": "http://127.0.0.1:8000/"}],
        "files": [
            {"path": "/srv/page/index.html", "content": PAGE},
            {"path": "/srv/page/cgi-bin/record", "content": RECORDER, "mode": 0o755}
        ],
        "services": [{
            "name": "page",
            "argv": ["busybox", "httpd", "-f", "-p", "127.0.0.1:8000", "-h", "/srv/page"],
            "readiness": {"kind": "tcp", "port": 8000}
        }, browser]
    })
}

#[test]
fn vm_the_viewer_shows_the_guest_desktop_and_carries_clicks_and_keys() {
    if hearth_testkit::static_agent().is_none() {
        return;
    }
    let Some(browser) = Browser::start(1280, 800) else {
        return;
    };
    common::ensure_assets("browser");
    let mut host = Host::new(&[]);
    host.start();
    let file = host.data().join("viewer-config.json");
    std::fs::write(&file, config().to_string()).unwrap();
    let booted = Instant::now();
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
    println!("browser VM ready in {:?}", booted.elapsed());
    let clock = common::guest_clock::guest_clock_error(&mut host, &id);
    assert!(
        clock < Duration::from_secs(1),
        "the guest's clock is {clock:?} off"
    );
    // `xdg-open URL`, what CLI tools call to start a login, opens this
    // browser: the desktop's handler for http(s) is hearth's.
    let out = host.vm_cli(&[
        "exec",
        &id,
        "--",
        "runuser",
        "-u",
        "hearth",
        "--",
        "xdg-mime",
        "query",
        "default",
        "x-scheme-handler/https",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hearth-browser.desktop",
        "{}",
        text(&out)
    );

    let url = viewer_link(&mut host, &id, &[]);
    let opened = Instant::now();
    browser.open(&url);
    browser.wait_for(
        Duration::from_secs(60),
        "the viewer to connect",
        "return document.getElementById('status').classList.contains('hidden')",
    );
    let canvas = browser.element("#screen canvas");
    wait_for_page(&browser, Duration::from_secs(180));
    println!(
        "viewer link opened to the guest page drawn: {:?}",
        opened.elapsed()
    );

    // Click into the page's input, then type.
    browser.click(&canvas, 0, 160);
    std::thread::sleep(Duration::from_millis(500));
    browser.type_text("hello viewer");
    let record = wait_for_record(&mut host, &id, "typed%20hello%20viewer");
    assert!(record.contains("click%20"), "{record}");

    revoked_and_expired_links_close_the_screen(&mut host, &browser, &id, &url);
    host.vm_ok(&["rm", &id]);
}

/// A new viewer link's URL from `hearth vm view`.
fn viewer_link(host: &mut Host, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["view", id];
    args.extend_from_slice(extra);
    let out = host.vm_cli(&args);
    assert!(out.status.success(), "{}", text(&out));
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(url.contains("/viewer#vm="), "{url}");
    url
}

/// Waits until the screenshot is the guest page: mostly its green, with
/// its white words.
fn wait_for_page(browser: &Browser, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (w, h, pixels) = decode_png(&browser.screenshot());
        let near = |c: [u8; 3]| pixels.iter().filter(|p| close(**p, c)).count() as f64;
        let (green, white) = (
            near(GREEN) / pixels.len() as f64,
            near(WHITE) / pixels.len() as f64,
        );
        if green > 0.5 && white > 0.005 {
            println!(
                "screenshot {w}x{h}: {:.0}% page green, {:.1}% white text",
                green * 100.0,
                white * 100.0
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer never showed the guest page: {:.1}% green, {:.2}% white",
            green * 100.0,
            white * 100.0
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 24)
}

/// The guest page's record, once it has `want`.
fn wait_for_record(host: &mut Host, id: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = host.vm_cli(&["exec", id, "--", "cat", "/tmp/page-record.log"]);
        let record = String::from_utf8_lossy(&out.stdout).into_owned();
        if record.contains(want) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no {want:?} in the guest page's record: {record:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The open screen closes once its link is revoked, and a short link's
/// once it expires; the page says which.
fn revoked_and_expired_links_close_the_screen(
    host: &mut Host,
    browser: &Browser,
    id: &str,
    url: &str,
) {
    let link = url
        .split("&key=")
        .nth(1)
        .unwrap()
        .split('_')
        .take(2)
        .collect::<Vec<_>>()
        .join("_");
    let out = host.vm_cli(&["view", id, "--revoke", &link]);
    assert!(out.status.success(), "{}", text(&out));
    let says = |what: &str| {
        format!(
            "return document.getElementById('status').innerText.toLowerCase().includes('{what}')"
        )
    };
    browser.wait_for(
        Duration::from_secs(30),
        "the page to say the link was revoked",
        &says("revoked"),
    );

    let short = viewer_link(host, id, &["--ttl", "8"]);
    // A URL that differs only in its fragment would not load the page anew.
    browser.open("about:blank");
    browser.open(&short);
    browser.wait_for(
        Duration::from_secs(60),
        "the short link's screen",
        "return document.getElementById('status').classList.contains('hidden')",
    );
    browser.wait_for(
        Duration::from_secs(40),
        "the page to say the link expired",
        &says("expired"),
    );
}
