//! The guest's wall clock, kept in step with the host's. QEMU's microvm
//! machine here has no clock device, so a guest starts at 1 January 1970
//! (or wherever the initramfs set it from `hearth.time=` on the kernel
//! command line, seconds behind): files get the wrong dates and no TLS
//! certificate can be checked. The host sends its time after each welcome
//! (the first right after boot, and again after a restore from a snapshot)
//! and every little while; the agent steps the clock when it is off by more
//! than [`STEP_THRESHOLD_MS`]. What it did shows in the boot report.

use std::sync::Mutex;

use hearth_types::guest::ClockReport;

use crate::uptime_ms;

/// Smaller differences are left alone: the message's own travel time is of
/// that order, and stepping the clock back and forth helps nobody.
pub const STEP_THRESHOLD_MS: i64 = 20;

/// Steps at least this large are said on the console.
pub const LOUD_STEP_MS: i64 = 1000;

static REPORT: Mutex<Option<ClockReport>> = Mutex::new(None);

/// What was done so far, for the boot report.
pub fn report() -> Option<ClockReport> {
    lock().clone()
}

/// The host says it is `host_ms` (Unix time, ms). With `set`, the guest's
/// clock is stepped to it when it is off; without (an agent run on a host
/// for tests), only the offset is noted.
pub fn sync(host_ms: u64, set: bool) {
    let offset = offset_ms(host_ms, now_ms());
    let error = if set && offset.abs() > STEP_THRESHOLD_MS {
        set_now(host_ms).err().map(|e| e.to_string())
    } else {
        None
    };
    if let Some(e) = &error {
        eprintln!("hearth-agent: setting the clock from the host's failed: {e}");
    } else if offset.abs() >= LOUD_STEP_MS {
        // Rare (a first boot, a restore from a snapshot): worth a line.
        eprintln!("hearth-agent: the clock was {offset} ms off the host's (host minus guest)");
    }
    note(&mut lock(), offset, uptime_ms(), error);
}

/// The host's time minus the guest's, in ms (saturating).
pub fn offset_ms(host_ms: u64, guest_ms: u64) -> i64 {
    let diff = i128::from(host_ms) - i128::from(guest_ms);
    diff.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Adds one sync to the report.
fn note(report: &mut Option<ClockReport>, offset: i64, uptime: u64, error: Option<String>) {
    let r = report.get_or_insert_with(|| ClockReport {
        first_offset_ms: offset,
        ..ClockReport::default()
    });
    r.syncs += 1;
    r.last_offset_ms = offset;
    r.last_sync_uptime_ms = uptime;
    r.error = error;
}

/// The guest's wall clock, Unix time in ms.
pub fn now_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

fn set_now(unix_ms: u64) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(unix_ms / 1000).unwrap_or(libc::time_t::MAX),
        tv_nsec: ((unix_ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec that outlives the call.
    let rc = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<ClockReport>> {
    REPORT.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_hosts_time_minus_the_guests() {
        assert_eq!(offset_ms(10_000, 4_000), 6_000);
        assert_eq!(offset_ms(4_000, 10_000), -6_000);
        assert_eq!(offset_ms(u64::MAX, 0), i64::MAX);
    }

    #[test]
    fn the_report_keeps_the_first_offset_and_the_last() {
        let mut report = None;
        note(&mut report, 1_764_000_000_000, 900, None);
        note(&mut report, -3, 30_900, None);
        let r = report.unwrap();
        assert_eq!(r.syncs, 2);
        assert_eq!(r.first_offset_ms, 1_764_000_000_000);
        assert_eq!(r.last_offset_ms, -3);
        assert_eq!(r.last_sync_uptime_ms, 30_900);
        assert_eq!(r.error, None);
    }

    #[test]
    fn an_agent_that_does_not_keep_the_clock_only_notes_the_offset() {
        let before = now_ms();
        sync(before + 3_600_000, false);
        let after = now_ms();
        assert!(after < before + 60_000, "the clock was moved");
        let r = report().unwrap();
        assert!(r.last_offset_ms > 3_500_000, "{r:?}");
    }
}
