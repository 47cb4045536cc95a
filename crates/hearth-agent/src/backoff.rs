//! When a service is started again: exponential backoff (200 ms doubling
//! up to 10 s, back to 200 ms after 10 s of healthy running) and the
//! crash-loop rule (N restarts within M seconds: reported once, then the
//! agent keeps trying at the ceiling).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use hearth_types::guest::CrashLoopRule;

pub const FIRST: Duration = Duration::from_millis(200);
pub const CEILING: Duration = Duration::from_secs(10);
/// A run this long resets the backoff and ends a crash loop.
pub const HEALTHY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Backoff {
    rule: CrashLoopRule,
    next: Duration,
    recent: VecDeque<Instant>,
    looping: bool,
}

/// What to do after an exit that will be followed by a restart.
#[derive(Debug, PartialEq, Eq)]
pub struct Restart {
    pub delay: Duration,
    /// This restart made it a crash loop (reported once per loop).
    pub crash_loop_began: bool,
}

impl Backoff {
    pub fn new(rule: CrashLoopRule) -> Self {
        Backoff {
            rule,
            next: FIRST,
            recent: VecDeque::new(),
            looping: false,
        }
    }

    /// The restart after a run of `ran_for` that ended at `now`.
    pub fn restart(&mut self, ran_for: Duration, now: Instant) -> Restart {
        if ran_for >= HEALTHY {
            self.next = FIRST;
            self.looping = false;
            self.recent.clear();
        }
        let window = Duration::from_secs(u64::from(self.rule.window_secs));
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.recent.pop_front();
        }
        let began = !self.looping && self.recent.len() >= self.rule.restarts as usize;
        self.looping |= began;
        let delay = if self.looping { CEILING } else { self.next };
        self.next = (self.next * 2).min(CEILING);
        Restart {
            delay,
            crash_loop_began: began,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(restarts: u32, window_secs: u32) -> CrashLoopRule {
        CrashLoopRule {
            restarts,
            window_secs,
        }
    }

    #[test]
    fn delays_double_to_the_ceiling_and_reset_after_a_healthy_run() {
        let mut b = Backoff::new(rule(100, 1));
        let t = Instant::now();
        let quick = Duration::from_millis(10);
        let delays: Vec<u64> = (0..8)
            .map(|i| {
                let now = t + Duration::from_secs(2 * i);
                b.restart(quick, now).delay.as_millis() as u64
            })
            .collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        let later = t + Duration::from_secs(100);
        assert_eq!(b.restart(HEALTHY, later).delay, FIRST);
    }

    #[test]
    fn n_restarts_within_the_window_are_one_crash_loop() {
        let mut b = Backoff::new(rule(3, 30));
        let t = Instant::now();
        let quick = Duration::from_millis(1);
        let began: Vec<bool> = (0..5)
            .map(|i| {
                b.restart(quick, t + Duration::from_secs(i))
                    .crash_loop_began
            })
            .collect();
        assert_eq!(began, [false, false, true, false, false]);
        assert_eq!(b.restart(quick, t + Duration::from_secs(6)).delay, CEILING);
        // A healthy run ends the loop; a new one is reported again.
        b.restart(HEALTHY, t + Duration::from_secs(100));
        let again: Vec<bool> = (1..3)
            .map(|i| {
                b.restart(quick, t + Duration::from_secs(100 + i))
                    .crash_loop_began
            })
            .collect();
        assert_eq!(again, [false, true]);
    }

    #[test]
    fn restarts_spread_wider_than_the_window_are_no_crash_loop() {
        let mut b = Backoff::new(rule(3, 5));
        let t = Instant::now();
        for i in 0..10 {
            let r = b.restart(Duration::from_secs(1), t + Duration::from_secs(i * 3));
            assert!(!r.crash_loop_began, "restart {i}");
        }
    }
}
