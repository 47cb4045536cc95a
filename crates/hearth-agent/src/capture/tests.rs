use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use hearth_agent_proto::{decode_data, read_frame};
use hearth_types::guest::CaptureFile;

use super::*;
use crate::journal::Limits;
use crate::outbox::Outbox;

const AUTH: &str = r#"{"tokens":{"access_token":"sk-secret-1","refresh_token":"rt-1"}}"#;

fn file(path: &Path, keys: &[&str]) -> CaptureFile {
    CaptureFile {
        path: path.to_str().unwrap().into(),
        required_keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

fn spec(files: Vec<CaptureFile>, stable_ms: u64) -> CaptureSpec {
    CaptureSpec { files, stable_ms }
}

fn incomplete(s: &CaptureSpec) -> String {
    match read_set(s) {
        Reading::Incomplete(why) => why,
        Reading::Complete { .. } => panic!("complete"),
        Reading::Failed(why) => panic!("failed: {why}"),
    }
}

fn digest_of(s: &CaptureSpec) -> [u8; 32] {
    match read_set(s) {
        Reading::Complete { digest, .. } => digest,
        Reading::Incomplete(why) | Reading::Failed(why) => panic!("{why}"),
    }
}

/// Rewrites `path` in place (truncate, then write), as CLIs do.
fn rewrite(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
}

#[test]
fn a_set_is_incomplete_while_a_file_is_missing_or_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let s = spec(vec![file(&a, &[]), file(&b, &[])], 0);
    assert!(incomplete(&s).ends_with("/a is missing"));
    rewrite(&a, "x");
    assert!(incomplete(&s).ends_with("/b is missing"));
    rewrite(&b, "");
    assert!(incomplete(&s).ends_with("/b is empty"));
    rewrite(&b, "y");
    digest_of(&s);
}

#[test]
fn required_keys_must_name_values_that_are_not_null_or_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    let s = spec(vec![file(&path, &["/tokens/access_token"])], 0);
    for (content, why) in [
        (r#"{"tokens":"#, "is not JSON (yet)"),
        (r#"{"tokens":{}}"#, "has no /tokens/access_token"),
        (
            r#"{"tokens":{"access_token":null}}"#,
            "has /tokens/access_token null",
        ),
        (
            r#"{"tokens":{"access_token":""}}"#,
            "has /tokens/access_token empty",
        ),
    ] {
        rewrite(&path, content);
        let got = incomplete(&s);
        assert!(got.ends_with(why), "{content}: {got}");
    }
    rewrite(&path, AUTH);
    digest_of(&s);
    // Any other value counts, a number or an object too.
    rewrite(&path, r#"{"tokens":{"access_token":{"v":1}}}"#);
    digest_of(&s);
}

#[test]
fn a_complete_set_carries_bytes_and_mode_and_says_nothing_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    rewrite(&path, AUTH);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = spec(vec![file(&path, &["/tokens/access_token"])], 0);
    let Reading::Complete { files, .. } = read_set(&s) else {
        panic!("not complete")
    };
    assert_eq!(&files[0].bytes[..], AUTH.as_bytes());
    assert_eq!(files[0].mode, 0o600);
    // A mode change alone makes another set.
    let before = digest_of(&s);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_ne!(digest_of(&s), before);
}

#[test]
fn a_file_too_large_or_not_regular_fails() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; CaptureSpec::MAX_FILE_BYTES as usize + 1]).unwrap();
    let Reading::Failed(why) = read_set(&spec(vec![file(&big, &[])], 0)) else {
        panic!("not failed")
    };
    assert!(why.contains("over the 1048576"), "{why}");
    let Reading::Failed(why) = read_set(&spec(vec![file(dir.path(), &[])], 0)) else {
        panic!("not failed")
    };
    assert!(why.ends_with("is not a regular file"), "{why}");
    // Files each within the limit that cannot go as one message.
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, vec![b'x'; 600 << 10]).unwrap();
    std::fs::write(&b, vec![b'x'; 600 << 10]).unwrap();
    let Reading::Failed(why) = read_set(&spec(vec![file(&a, &[]), file(&b, &[])], 0)) else {
        panic!("not failed")
    };
    assert!(why.contains("capture fewer or smaller files"), "{why}");
}

#[test]
fn a_set_waits_until_stable_and_rewrites_in_place_send_only_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    let s = spec(vec![file(&path, &["/tokens/access_token"])], 500);
    let mut t = Tracker::new(Duration::from_millis(500));
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let mut look = |ms| t.observe(&read_set(&s), at(ms));
    rewrite(&path, r#"{"tokens":{"#);
    assert_eq!(look(0), Step::Wait);
    rewrite(&path, &AUTH.replace("sk-secret-1", "first"));
    assert_eq!(look(100), Step::Wait);
    rewrite(&path, &AUTH.replace("sk-secret-1", "second"));
    assert_eq!(look(550), Step::Wait, "changed: the clock starts again");
    rewrite(&path, AUTH);
    assert_eq!(look(700), Step::Wait);
    assert_eq!(look(1100), Step::Wait, "400 ms the same is not enough");
    assert_eq!(look(1200), Step::Send);
    assert_eq!(look(1400), Step::Wait, "sent once");
    assert_eq!(look(5000), Step::Wait);
    // A different complete set is sent again, once stable.
    rewrite(&path, &AUTH.replace("rt-1", "rt-2"));
    assert_eq!(look(5200), Step::Wait);
    assert_eq!(look(5800), Step::Send);
    assert_eq!(look(6000), Step::Wait);
    // Asked again (a reconnect): the same set goes once more.
    t.forget_said();
    assert_eq!(t.observe(&read_set(&s), at(6200)), Step::Send);
}

#[test]
fn a_failure_is_said_once_until_something_else_happens() {
    let mut t = Tracker::new(Duration::ZERO);
    let now = Instant::now();
    let failed = || Reading::Failed("too big".into());
    assert_eq!(t.observe(&failed(), now), Step::Fail("too big".into()));
    assert_eq!(t.observe(&failed(), now), Step::Wait);
    t.observe(&Reading::Incomplete("gone".into()), now);
    assert_eq!(t.observe(&failed(), now), Step::Fail("too big".into()));
}

/// A new connection of `outbox` over a socket pair: its link, and the
/// host's end.
fn attach(outbox: &Arc<Outbox>) -> (Link, UnixStream) {
    let (host, guest) = UnixStream::pair().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (outbox.attach(Box::new(guest), 0), host)
}

fn recv(host: &mut UnixStream) -> GuestMessage {
    read_frame(host).unwrap().expect("the agent's end closed")
}

/// No message within `window`.
fn quiet(host: &UnixStream, window: Duration) {
    let mut host = host.try_clone().unwrap();
    host.set_read_timeout(Some(window)).unwrap();
    let got: Result<Option<GuestMessage>, _> = read_frame(&mut host);
    assert!(got.is_err(), "expected nothing, got {got:?}");
}

fn captured_bytes(msg: GuestMessage) -> Vec<Vec<u8>> {
    let GuestMessage::Captured { id: 7, files } = msg else {
        panic!("not captured by watch 7: {msg:?}")
    };
    files
        .iter()
        .map(|f| decode_data(&f.data).unwrap())
        .collect()
}

#[test]
fn a_watch_sends_the_final_set_once_and_again_when_asked_after_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    let outbox = Outbox::start(Limits::default());
    let (link, mut host) = attach(&outbox);
    let captures = Captures::default();
    captures.connected();
    let s = spec(vec![file(&path, &["/tokens/access_token"])], 1500);
    captures.watch(7, s.clone(), link);
    for v in ["one", "two", "three"] {
        rewrite(&path, &AUTH.replace("sk-secret-1", v));
        std::thread::sleep(Duration::from_millis(100));
    }
    rewrite(&path, AUTH);
    let written = Instant::now();
    assert_eq!(captured_bytes(recv(&mut host)), [AUTH.as_bytes()]);
    assert!(written.elapsed() >= Duration::from_millis(1400));
    quiet(&host, Duration::from_millis(800));
    assert!(outbox.pending() == 0, "a capture is never a record");

    // The host comes back and asks again: the same set, at once.
    outbox.detach();
    let (link, mut host) = attach(&outbox);
    captures.connected();
    let asked = Instant::now();
    captures.watch(7, s, link);
    assert_eq!(captured_bytes(recv(&mut host)), [AUTH.as_bytes()]);
    assert!(asked.elapsed() < Duration::from_millis(1400), "no new wait");

    // Stopped: a new set is not sent.
    captures.stop(7);
    std::thread::sleep(POLL * 2);
    rewrite(&path, &AUTH.replace("rt-1", "rt-2"));
    quiet(&host, Duration::from_millis(1000));
}

#[test]
fn a_bad_spec_fails_at_once() {
    let outbox = Outbox::start(Limits::default());
    let (link, mut host) = attach(&outbox);
    let captures = Captures::default();
    captures.connected();
    let bad = spec(vec![file(Path::new("/a/../b"), &[])], 0);
    captures.watch(3, bad, link);
    let GuestMessage::CaptureFailed { id: 3, message } = recv(&mut host) else {
        panic!("not capture_failed")
    };
    assert!(message.contains("files[0].path"), "{message}");
}

#[test]
fn a_watch_not_asked_for_again_after_a_reconnect_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let outbox = Outbox::start(Limits::default());
    let (link, _host) = attach(&outbox);
    let captures = Captures::with_grace(Duration::from_millis(300));
    captures.connected();
    captures.watch(1, spec(vec![file(&path, &[])], 0), link);
    outbox.detach();
    let (link, mut host) = attach(&outbox);
    captures.connected();
    std::thread::sleep(Duration::from_millis(800));
    assert!(captures.lock().watches.is_empty(), "the orphan is gone");
    // Asked for after that, it starts anew.
    rewrite(&path, "t");
    captures.watch(7, spec(vec![file(&path, &[])], 0), link);
    assert_eq!(captured_bytes(recv(&mut host)), [b"t"]);
}
