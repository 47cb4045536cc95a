//! Restart policies as pure rules: given how a persistent VM's run ended,
//! its policy, how many restarts it already had and how long it ran
//! healthy, whether the controller starts it again and after what delay.
//! The reconciler carries the answer out (`controller::persist`); keeping
//! the rule here lets every case be tested without a VM.

use std::time::Duration;

use hearth_types::RestartPolicy;

/// Exponential backoff between restarts: `base`, doubled per restart,
/// never more than `cap`; a run that stayed ready `healthy_after` or
/// longer starts the count again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(5 * 60),
            healthy_after: Duration::from_secs(5 * 60),
        }
    }
}

impl Backoff {
    /// The wait before restart number `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The VM failed: its hypervisor died, its kernel panicked, its boot
    /// timed out or a start step failed.
    Failed,
    /// The guest powered off by itself.
    PoweredOff,
    /// Someone (or the idle policy, or `rm`) asked it to stop.
    StopRequested,
    /// Its hypervisor was gone when the controller started: the host (or
    /// everything on it) went down while it ran.
    HostDown,
}

/// A restart the reconciler is to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Its number since the last healthy run (1 for the first).
    pub attempt: u32,
    pub delay: Duration,
}

/// Whether and when a VM whose run ended by `ending` starts again.
/// `restarts` is its count so far; `healthy_for` how long its last run
/// was ready (`None`: it never got ready).
pub fn plan(
    policy: RestartPolicy,
    ending: Ending,
    restarts: u32,
    healthy_for: Option<Duration>,
    backoff: &Backoff,
) -> Option<Planned> {
    let wanted = match (policy, ending) {
        (_, Ending::StopRequested) | (RestartPolicy::Never, _) => false,
        (RestartPolicy::OnFailure, ending) => ending == Ending::Failed,
        (RestartPolicy::Always, _) => true,
    };
    if !wanted {
        return None;
    }
    let healthy = healthy_for.is_some_and(|d| d >= backoff.healthy_after);
    let attempt = if healthy {
        1
    } else {
        restarts.saturating_add(1)
    };
    Some(Planned {
        attempt,
        delay: backoff.delay(attempt),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ending as E;
    use RestartPolicy as P;

    fn backoff() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            healthy_after: Duration::from_secs(300),
        }
    }

    #[test]
    fn delays_double_from_the_base_up_to_the_cap() {
        let b = backoff();
        let secs: Vec<u64> = (1..=8).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.delay(0), b.base);
        assert_eq!(b.delay(u32::MAX), b.cap);
    }

    #[test]
    fn each_policy_restarts_exactly_the_endings_it_names() {
        let table = [
            (P::Never, [false, false, false, false]),
            (P::OnFailure, [true, false, false, false]),
            (P::Always, [true, true, false, true]),
        ];
        let endings = [E::Failed, E::PoweredOff, E::StopRequested, E::HostDown];
        for (policy, expected) in table {
            for (ending, want) in endings.into_iter().zip(expected) {
                let got = plan(policy, ending, 0, None, &backoff()).is_some();
                assert_eq!(got, want, "{policy} after {ending:?}");
            }
        }
    }

    #[test]
    fn the_count_grows_until_a_healthy_run_resets_it() {
        let b = backoff();
        let third = plan(P::OnFailure, E::Failed, 2, None, &b).unwrap();
        assert_eq!(
            third,
            Planned {
                attempt: 3,
                delay: Duration::from_secs(4)
            }
        );
        let short = Some(Duration::from_secs(299));
        assert_eq!(
            plan(P::OnFailure, E::Failed, 9, short, &b).unwrap().attempt,
            10
        );
        let healthy = Some(Duration::from_secs(300));
        let reset = plan(P::OnFailure, E::Failed, 9, healthy, &b).unwrap();
        assert_eq!(
            reset,
            Planned {
                attempt: 1,
                delay: b.base
            }
        );
    }
}
