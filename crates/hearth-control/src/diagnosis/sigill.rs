//! `killed_by_sigill`: a program died of SIGILL — it executed an instruction
//! the VM's CPU does not have, typically because it was built for a newer
//! CPU (x86-64-v2/v3, AVX) than the VM's CPU model offers. The signs: the
//! kernel's `traps: X[pid] trap invalid opcode`, a shell's `Illegal
//! instruction`, systemd's `status=4/ILL`, an exit status of 132 (128 + 4),
//! and glibc refusing to start on a CPU below the ISA level it was built for.

use hearth_types::api::Finding;
use hearth_types::console::{classify, ConsoleEvent};
use hearth_types::guest::ExitStatus;

use super::agent_facts::ServiceFacts;
use super::log::{contains_ci, journal, message};
use super::{finding, service_lines, Input};

/// The status of a command killed by signal 4.
const SIGILL_STATUS: i32 = 128 + SIGILL;
const SIGILL: i32 = 4;
/// How many lines are quoted.
const MAX_LINES: usize = 5;

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let log = &input.console;
    let signs = log.distinct(&log.matching(is_sign));
    let services = service_signs(input);
    if signs.is_empty() && services.is_empty() {
        return Vec::new();
    }
    let who = services
        .first()
        .map(|(s, _)| format!("service {}", s.name))
        .or_else(|| signs.iter().find_map(|&i| culprit(&log.lines()[i])))
        .unwrap_or_else(|| "the command".to_owned());
    let shown: Vec<usize> = signs.iter().take(MAX_LINES).copied().collect();
    let killed = signs.iter().any(|&i| !is_glibc_refusal(&log.lines()[i]))
        || services
            .iter()
            .any(|(s, _)| s.exits.iter().any(is_sigill_exit));
    let what = if killed {
        "was killed by SIGILL (illegal instruction): it ran a CPU instruction"
    } else {
        "refused to start: it needs CPU instructions"
    };
    let mut evidence = log.pick(&shown);
    evidence.extend(services.into_iter().flat_map(|(_, lines)| lines));
    evidence.truncate(MAX_LINES);
    vec![finding(
        "killed_by_sigill",
        format!(
            "{who} {what} the VM's CPU does not have, typically a binary built for a newer \
             CPU (x86-64-v2/v3, AVX) than the VM's CPU model"
        ),
        evidence,
        "use a build of the program for baseline x86-64 (compiled with -march=x86-64, or \
         the distribution's package), or give the VM a CPU model with the missing feature; \
         compare the flags in the guest's /proc/cpuinfo with what the program needs",
    )]
}

/// The agent's services that died of SIGILL or whose output shows it,
/// each with its telling lines and its SIGILL exit.
fn service_signs<'a>(input: &Input<'a>) -> Vec<(&'a ServiceFacts, Vec<String>)> {
    let mut found = Vec::new();
    for s in &input.agent.services {
        let mut lines = service_lines::matching_output(s, 2, is_sign);
        let exit = s.exits.iter().rev().find(|e| is_sigill_exit(e));
        if lines.is_empty() && exit.is_some() {
            // Its last words say what it was doing when it died.
            lines = service_lines::last_output(s, 1);
        }
        lines.extend(exit.map(|e| service_lines::exit(s, e)));
        if exit.is_some() || !lines.is_empty() {
            found.push((s, lines));
        }
    }
    found
}

/// Killed by signal 4, or a shell's report of it (128 + 4).
fn is_sigill_exit(status: &ExitStatus) -> bool {
    status.signal == Some(SIGILL) || status.code == Some(SIGILL_STATUS)
}

fn is_sign(line: &str) -> bool {
    let msg = message(line);
    msg.contains("trap invalid opcode")
        || contains_ci(msg, "illegal instruction")
        || msg.contains("status=4/ILL")
        || is_glibc_refusal(line)
        || classify(line) == Some(ConsoleEvent::ExitStatus(SIGILL_STATUS))
}

/// glibc's dynamic loader checks the CPU against the ISA level the
/// program was built for and stops before running it.
fn is_glibc_refusal(line: &str) -> bool {
    line.contains("CPU ISA level is lower than required")
        || line.contains("CPU does not support x86-64-v")
}

/// Who died, where the line says: `traps: node[311] trap invalid opcode`,
/// `agent.service: Main process exited, code=killed, status=4/ILL`, or the
/// process that printed glibc's refusal.
fn culprit(line: &str) -> Option<String> {
    let msg = message(line);
    if let Some(rest) = msg.strip_prefix("traps: ") {
        let (name, _) = rest.split_once('[')?;
        return Some(name.to_owned());
    }
    if msg.contains("status=4/ILL") {
        let text = journal(line).map_or(msg, |j| j.text);
        return text.split_once(": ").map(|(unit, _)| unit.to_owned());
    }
    if is_glibc_refusal(msg) {
        let j = journal(line);
        let text = j.map_or(msg, |j| j.text);
        let named = text
            .split_once(": CPU ISA level")
            .map(|(head, _)| head.rsplit('/').next().unwrap_or(head));
        return named.or(j.map(|j| j.ident)).map(str::to_owned);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::{diagnose, Evidence};

    fn rules_of(console: &str) -> Vec<hearth_types::api::Finding> {
        diagnose(&Evidence {
            console: console.into(),
            ..Evidence::default()
        })
    }

    #[test]
    fn a_shell_killed_by_sigill_with_status_132() {
        // From a real run: `-- sh -c 'kill -ILL $$'`.
        let found = rules_of("hearth: ready\r\nIllegal instruction\r\n\r\nhearth: exit status 132\r\nhearth: power off\r\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, "killed_by_sigill");
        assert!(found[0]
            .cause
            .starts_with("the command was killed by SIGILL"));
        assert_eq!(
            found[0].evidence,
            ["Illegal instruction", "hearth: exit status 132"]
        );
        assert!(found[0].fix.contains("x86-64"));
    }

    #[test]
    fn the_kernels_trap_line_names_the_program() {
        let found = rules_of(
            "[   12.734518] traps: node[311] trap invalid opcode ip:7f3c2a1b4e10 sp:7ffd4b2a9c80 error:0 in node[7f3c29e00000+2400000]\n\
             [   12.801000] systemd[1]: agent.service: Main process exited, code=killed, status=4/ILL\n",
        );
        let f = found.iter().find(|f| f.rule == "killed_by_sigill").unwrap();
        assert!(f.cause.starts_with("node was killed"), "{f:?}");
        assert_eq!(f.evidence.len(), 2);
    }

    #[test]
    fn glibc_refusing_an_old_cpu_counts_too() {
        let found =
            rules_of("[    9.1] node[230]: Fatal glibc error: CPU does not support x86-64-v2\n");
        assert_eq!(found[0].rule, "killed_by_sigill");
        assert!(
            found[0].cause.starts_with("node refused to start"),
            "{:?}",
            found[0]
        );
    }

    #[test]
    fn the_program_glibc_names_is_the_culprit() {
        let found = rules_of(
            "[   14.17] sh[209]: /opt/node/bin/node: CPU ISA level is lower than required\n",
        );
        assert!(
            found[0].cause.starts_with("node refused to start"),
            "{:?}",
            found[0]
        );
    }

    #[test]
    fn illegal_number_is_not_illegal_instruction() {
        assert!(rules_of("[   13.99] sh[206]: /bin/sh: 1: kill: Illegal number: $\n").is_empty());
    }

    #[test]
    fn a_service_the_agent_saw_die_of_sigill_is_named_once() {
        use hearth_types::guest::ExitStatus;

        use super::super::{diagnose_with_agent, AgentFacts, OutputLine, ServiceFacts};

        let web = ServiceFacts {
            name: "web".into(),
            exits: vec![ExitStatus {
                code: None,
                signal: Some(4),
            }],
            last_lines: vec![OutputLine::stdout("using AVX-512 kernels")],
            ..ServiceFacts::default()
        };
        let agent = AgentFacts {
            services: vec![web],
            ..AgentFacts::default()
        };
        // The kernel's trap line on the console and the agent's exit record
        // are the same death: one finding with both.
        let console = "[   12.7] traps: web[311] trap invalid opcode ip:7f3c sp:7ffd error:0 in web[7f3c+24]\n";
        let found = diagnose_with_agent(
            &Evidence {
                console: console.into(),
                ..Evidence::default()
            },
            &agent,
        );
        let f: Vec<_> = found
            .iter()
            .filter(|f| f.rule == "killed_by_sigill")
            .collect();
        assert_eq!(f.len(), 1, "{found:?}");
        assert!(
            f[0].cause.starts_with("service web was killed by SIGILL"),
            "{f:?}"
        );
        assert_eq!(f[0].evidence.len(), 3, "{f:?}");
        assert_eq!(
            f[0].evidence[1..],
            ["web: using AVX-512 kernels", "web: killed by signal 4"]
        );
    }
}
