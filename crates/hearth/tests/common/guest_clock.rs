//! The guest's wall clock read precisely, for tests that hold it against
//! the host's: a file touched in the guest and its modification time as
//! `stat` prints it (busybox's `date` has no sub-second format).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::serve::Host;
use super::text;

/// How far the guest's clock is from the host's, as far as one exec can
/// tell: the guest's time must fall between the host's before and after
/// the exec, so the result is 0 when it does, else the distance to that
/// interval (either way).
pub fn guest_clock_error(host: &mut Host, id: &str) -> Duration {
    let before = SystemTime::now();
    let out = host.vm_cli(&[
        "exec",
        id,
        "--",
        "sh",
        "-c",
        "touch /tmp/hearth-clock && stat -c '%Y %y' /tmp/hearth-clock",
    ]);
    let after = SystemTime::now();
    assert!(out.status.success(), "{}", text(&out));
    let guest = parse_stat(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|| panic!("unreadable stat output: {}", text(&out)));
    if guest < before {
        before.duration_since(guest).unwrap()
    } else if guest > after {
        guest.duration_since(after).unwrap()
    } else {
        Duration::ZERO
    }
}

/// `SECS YYYY-MM-DD HH:MM:SS.NNNNNNNNN +ZONE` as a time.
fn parse_stat(line: &str) -> Option<SystemTime> {
    let mut words = line.split_whitespace();
    let secs: u64 = words.next()?.parse().ok()?;
    let clock = words.nth(1)?;
    let nanos = match clock.split_once('.') {
        Some((_, frac)) => format!("{frac:0<9}")[..9].parse().ok()?,
        None => 0,
    };
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[test]
fn stat_times_are_read_to_the_nanosecond() {
    let t = parse_stat("1796168954 2026-12-01 23:49:14.061905656 +0000\n").unwrap();
    assert_eq!(t, UNIX_EPOCH + Duration::new(1796168954, 61905656));
    assert_eq!(
        parse_stat("5 1970-01-01 00:00:05.5 +0000"),
        Some(UNIX_EPOCH + Duration::new(5, 500_000_000))
    );
    assert_eq!(parse_stat("garbage"), None);
}
