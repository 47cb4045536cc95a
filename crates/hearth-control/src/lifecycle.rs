//! The VM lifecycle as a pure state machine: which transitions exist, and
//! nothing else. Every state change in hearth goes through [`next`], so an
//! impossible change (destroying a running VM, reviving a destroyed one) is
//! refused in one place, and the table is tested exhaustively.

use hearth_types::{FailureCode, VmState};

/// Something that happens to a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Start making its files.
    Prepare,
    /// The hypervisor process started.
    Boot,
    /// The guest said it is ready.
    Ready,
    /// Someone asked it to stop.
    Stop,
    /// The hypervisor ended without a failure.
    Exited,
    /// Something went wrong.
    Fail(FailureCode),
    /// Its files are removed and its logs archived.
    Destroy,
    /// A persistent VM boots again from its kept disk (on request, or by
    /// its restart policy).
    Start,
}

impl Transition {
    pub const ALL_KINDS: [Transition; 8] = [
        Transition::Prepare,
        Transition::Boot,
        Transition::Ready,
        Transition::Stop,
        Transition::Exited,
        Transition::Fail(FailureCode::HypervisorExited),
        Transition::Destroy,
        Transition::Start,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a VM that is {from} cannot {what}")]
pub struct InvalidTransition {
    pub from: VmState,
    pub what: &'static str,
}

/// The state after `t` happens in `from`, or why it cannot.
pub fn next(from: VmState, t: Transition) -> Result<VmState, InvalidTransition> {
    use Transition as T;
    use VmState as S;
    let to = match (from, t) {
        (S::Requested, T::Prepare) => S::Preparing,
        (S::Preparing, T::Boot) => S::Booting,
        (S::Booting, T::Ready) => S::Ready,
        (S::Requested | S::Preparing | S::Booting | S::Ready, T::Stop) => S::Stopping,
        (S::Booting | S::Ready | S::Stopping, T::Exited) => S::Stopped,
        (S::Requested | S::Preparing | S::Booting | S::Ready | S::Stopping, T::Fail(_)) => {
            S::Failed
        }
        (S::Stopped | S::Failed, T::Destroy) => S::Destroyed,
        (S::Stopped | S::Failed, T::Start) => S::Preparing,
        _ => {
            return Err(InvalidTransition {
                from,
                what: verb(t),
            })
        }
    };
    Ok(to)
}

fn verb(t: Transition) -> &'static str {
    match t {
        Transition::Prepare => "be prepared",
        Transition::Boot => "boot",
        Transition::Ready => "become ready",
        Transition::Stop => "be stopped",
        Transition::Exited => "exit",
        Transition::Fail(_) => "fail",
        Transition::Destroy => "be destroyed (stop it first)",
        Transition::Start => "be started (only a stopped or failed VM starts)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VmState as S;

    /// The whole table, written out independently of `next`.
    const ALLOWED: &[(S, &str, S)] = &[
        (S::Requested, "prepare", S::Preparing),
        (S::Requested, "stop", S::Stopping),
        (S::Requested, "fail", S::Failed),
        (S::Preparing, "boot", S::Booting),
        (S::Preparing, "stop", S::Stopping),
        (S::Preparing, "fail", S::Failed),
        (S::Booting, "ready", S::Ready),
        (S::Booting, "stop", S::Stopping),
        (S::Booting, "exited", S::Stopped),
        (S::Booting, "fail", S::Failed),
        (S::Ready, "stop", S::Stopping),
        (S::Ready, "exited", S::Stopped),
        (S::Ready, "fail", S::Failed),
        (S::Stopping, "exited", S::Stopped),
        (S::Stopping, "fail", S::Failed),
        (S::Stopped, "destroy", S::Destroyed),
        (S::Failed, "destroy", S::Destroyed),
        (S::Stopped, "start", S::Preparing),
        (S::Failed, "start", S::Preparing),
    ];

    fn name(t: Transition) -> &'static str {
        match t {
            Transition::Prepare => "prepare",
            Transition::Boot => "boot",
            Transition::Ready => "ready",
            Transition::Stop => "stop",
            Transition::Exited => "exited",
            Transition::Fail(_) => "fail",
            Transition::Destroy => "destroy",
            Transition::Start => "start",
        }
    }

    #[test]
    fn every_state_and_transition_matches_the_table() {
        for from in S::ALL {
            for t in Transition::ALL_KINDS {
                let expected = ALLOWED
                    .iter()
                    .find(|(f, n, _)| *f == from && *n == name(t))
                    .map(|(_, _, to)| *to);
                assert_eq!(next(from, t).ok(), expected, "{from} --{}-->", name(t));
            }
        }
    }

    #[test]
    fn every_failure_code_fails_an_active_vm() {
        for code in FailureCode::ALL {
            assert_eq!(next(S::Booting, Transition::Fail(code)), Ok(S::Failed));
        }
    }

    #[test]
    fn destroyed_is_terminal_and_every_state_can_reach_it() {
        for t in Transition::ALL_KINDS {
            assert!(next(S::Destroyed, t).is_err());
        }
        for start in S::ALL {
            let mut seen = vec![start];
            let mut frontier = vec![start];
            while let Some(s) = frontier.pop() {
                for t in Transition::ALL_KINDS {
                    if let Ok(n) = next(s, t) {
                        if !seen.contains(&n) {
                            seen.push(n);
                            frontier.push(n);
                        }
                    }
                }
            }
            assert!(
                seen.contains(&S::Destroyed),
                "{start} cannot reach destroyed"
            );
        }
    }

    #[test]
    fn a_started_vm_boots_through_the_same_states_as_a_new_one() {
        for from in [S::Stopped, S::Failed] {
            let mut s = next(from, Transition::Start).unwrap();
            for t in [Transition::Boot, Transition::Ready, Transition::Stop] {
                s = next(s, t).unwrap();
            }
            assert_eq!(next(s, Transition::Exited), Ok(S::Stopped));
        }
        let running = next(S::Ready, Transition::Start).unwrap_err().to_string();
        assert_eq!(
            running,
            "a VM that is ready cannot be started (only a stopped or failed VM starts)"
        );
        assert!(next(S::Destroyed, Transition::Start).is_err());
    }

    #[test]
    fn refusals_say_what_and_from_where() {
        let err = next(S::Ready, Transition::Destroy).unwrap_err().to_string();
        assert_eq!(
            err,
            "a VM that is ready cannot be destroyed (stop it first)"
        );
    }
}
