//! A program that cannot even start.
//!
//! `exec_format_error`: the kernel refused to execute a file (`Exec format
//! error`, ENOEXEC, `error -8`): a binary for another architecture, a
//! truncated download, a script without `#!`. Shells report a command they
//! found but could not execute with status 126.
//!
//! `missing_library`: the dynamic loader could not find a shared library
//! the program needs (`error while loading shared libraries: libX.so: cannot
//! open shared object file`), or Node.js could not load its ICU data.

use hearth_types::api::Finding;
use hearth_types::console::{classify, ConsoleEvent};

use super::agent_facts::ServiceFacts;
use super::log::{contains_ci, journal, message};
use super::{finding, service_lines, Input};

/// A command found but not executable.
const CANNOT_EXECUTE_STATUS: i32 = 126;
/// How many lines are quoted.
const MAX_LINES: usize = 4;

pub(super) fn check_format(input: &Input) -> Vec<Finding> {
    let log = &input.console;
    let errors = log.distinct(&log.matching(is_format_error));
    let status =
        log.matching(|l| classify(l) == Some(ConsoleEvent::ExitStatus(CANNOT_EXECUTE_STATUS)));
    let services = format_errors_of_services(input);
    if errors.is_empty() && status.is_empty() && services.is_empty() {
        return Vec::new();
    }
    let mut shown: Vec<usize> = errors.iter().take(MAX_LINES - 1).copied().collect();
    shown.extend(status.first());
    let cause = if errors.is_empty() && services.is_empty() {
        "the command was found but could not be executed (exit status 126): it is not \
         executable, or not a program for this machine"
            .to_owned()
    } else {
        let what = services
            .first()
            .map(|(s, _)| format!("the program of service {}", s.name))
            .or_else(|| {
                errors
                    .iter()
                    .find_map(|&i| program_of(&log.lines()[i]))
                    .map(|p| format!("`{p}`"))
            })
            .unwrap_or_else(|| "a program".to_owned());
        format!(
            "the kernel refused to execute {what} (Exec format error): it is not a program \
             for this machine — built for another architecture (e.g. arm64), a truncated or \
             corrupt file, or a script without a #! line"
        )
    };
    let mut evidence = log.pick(&shown);
    evidence.extend(services.into_iter().flat_map(|(_, lines)| lines));
    evidence.truncate(MAX_LINES);
    vec![finding(
        "exec_format_error",
        cause,
        evidence,
        "check the file on the host with `file PATH`: it must be an x86-64 ELF executable or \
         a script whose first line is #!; install the amd64 build, or rebuild it for x86-64, \
         and make it executable (chmod +x)",
    )]
}

/// The agent's services that could not be executed: the spawn failure
/// (ENOEXEC is `os error 8`) or a line of their output saying so.
fn format_errors_of_services<'a>(input: &Input<'a>) -> Vec<(&'a ServiceFacts, Vec<String>)> {
    let mut found = Vec::new();
    for s in &input.agent.services {
        let mut lines = service_lines::matching_output(s, 2, is_format_error);
        if let Some(why) = s.spawn_error.as_deref().filter(|m| is_enoexec(m)) {
            lines.push(service_lines::spawn_error(s, why));
        }
        if !lines.is_empty() {
            found.push((s, lines));
        }
    }
    found
}

fn is_enoexec(message: &str) -> bool {
    contains_ci(message, "exec format error") || message.contains("os error 8)")
}

fn is_format_error(line: &str) -> bool {
    let msg = message(line);
    contains_ci(msg, "exec format error")
        || msg.contains("cannot execute binary file")
        || (msg.contains("(error -8)") && msg.contains("init"))
}

/// The program an exec error names: `su: can't execute '/tmp/x': ...`,
/// `Failed to execute /usr/bin/agent: ...`, `bash: ./x: cannot execute`.
fn program_of(line: &str) -> Option<String> {
    let msg = message(line);
    let text = journal(line).map_or(msg, |j| j.text);
    if let Some((_, rest)) = text.split_once("can't execute '") {
        return rest.split_once('\'').map(|(p, _)| p.to_owned());
    }
    for prefix in ["Failed to execute ", "Starting init: ", "Run "] {
        if let Some((_, rest)) = text.split_once(prefix) {
            let path = rest.split([':', ' ', ',']).next().unwrap_or("");
            if path.starts_with('/') {
                return Some(path.to_owned());
            }
        }
    }
    let (head, _) = text.split_once(": cannot execute binary file")?;
    head.rsplit(": ").next().map(str::to_owned)
}

pub(super) fn check_library(input: &Input) -> Vec<Finding> {
    let log = &input.console;
    let libs = log.distinct(&log.matching(|l| library_of(l).is_some()));
    let icu =
        log.matching(|l| contains_ci(l, "could not initialize ICU") || contains_ci(l, "icu data"));
    let mut found = Vec::new();
    let mut named: Vec<String> = libs
        .iter()
        .filter_map(|&i| library_of(&log.lines()[i]).map(|(_, lib)| lib))
        .collect();
    if let Some(&first) = libs.first() {
        let (program, lib) = library_of(&log.lines()[first]).unwrap_or_default();
        let shown: Vec<usize> = libs.iter().take(MAX_LINES).copied().collect();
        found.push(library_finding(&program, &lib, log.pick(&shown)));
    }
    for s in &input.agent.services {
        let lines = service_lines::matching_output(s, MAX_LINES - 1, |l| library_of(l).is_some());
        let Some(first) = s.last_lines.iter().find_map(|l| library_of(&l.text)) else {
            continue;
        };
        let (_, lib) = first;
        // The same library named on the console is the same failure.
        if named.contains(&lib) {
            continue;
        }
        let mut evidence = lines;
        evidence.extend(service_lines::last_exit(s));
        found.push(library_finding(
            &format!("service {}", s.name),
            &lib,
            evidence,
        ));
        named.push(lib);
    }
    if !icu.is_empty() {
        let shown: Vec<usize> = icu.iter().take(MAX_LINES).copied().collect();
        found.push(finding(
            "missing_library",
            "Node.js could not load its ICU data (internationalisation tables), so it stopped",
            log.pick(&shown),
            "install ICU in the image (Debian: libicu72) or use a Node.js build with full ICU \
             built in; a separate ICU data file must be named with NODE_ICU_DATA or \
             --icu-data-dir",
        ));
    }
    found
}

fn library_finding(program: &str, lib: &str, evidence: Vec<String>) -> Finding {
    finding(
        "missing_library",
        format!(
            "{program} could not start: it needs the shared library {lib}, which is not in \
             the image (or was built for another distribution or libc)"
        ),
        evidence,
        format!(
            "install the package that provides {lib} in the image (on Debian: \
             `apt-file search {lib}`), ship the library with the program, or use a \
             statically linked build"
        ),
    )
}

/// `node: error while loading shared libraries: libatomic.so.1: cannot
/// open shared object file: No such file or directory` → ("node",
/// "libatomic.so.1"); musl's `Error loading shared library X: ...` too.
fn library_of(line: &str) -> Option<(String, String)> {
    let msg = message(line);
    let text = journal(line).map_or(msg, |j| j.text);
    if let Some((head, rest)) = text.split_once(": error while loading shared libraries: ") {
        let lib = rest.split(':').next()?.trim();
        let program = head.rsplit('/').next().unwrap_or(head);
        return Some((program.to_owned(), lib.to_owned()));
    }
    let (_, rest) = text.split_once("Error loading shared library ")?;
    let lib = rest.split(':').next()?.trim();
    let program = journal(line).map_or("a program", |j| j.ident);
    Some((program.to_owned(), lib.to_owned()))
}

#[cfg(test)]
mod tests {
    use hearth_types::guest::ExitStatus;

    use super::super::diagnose_console as found;
    use super::super::{diagnose_with_agent, AgentFacts, Evidence, OutputLine, ServiceFacts};

    #[test]
    fn an_exec_format_error_names_the_file() {
        // From a real run: a file that is not an x86-64 program, executed by su.
        let f = found("hearth: ready\r\nsu: can't execute '/tmp/x': Exec format error\r\n\r\nhearth: exit status 1\r\nhearth: power off\r\n");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "exec_format_error");
        assert!(f[0].cause.contains("`/tmp/x`"), "{:?}", f[0]);
        assert_eq!(
            f[0].evidence,
            ["su: can't execute '/tmp/x': Exec format error"]
        );
    }

    #[test]
    fn systemds_exec_failure_and_status_126_count() {
        let f = found("[   14.2] (agent)[231]: agent.service: Failed to execute /opt/agent/bin/agent: Exec format error\n\
                       [   14.2] systemd[1]: agent.service: Main process exited, code=exited, status=203/EXEC\n");
        assert_eq!(f[0].rule, "exec_format_error");
        assert!(f[0].cause.contains("`/opt/agent/bin/agent`"), "{:?}", f[0]);
        let f = found("hearth: ready\nsh: ./agent: Permission denied\n\nhearth: exit status 126\n");
        assert_eq!(f[0].rule, "exec_format_error");
        assert!(f[0].cause.contains("126"));
    }

    #[test]
    fn a_missing_shared_library_is_named() {
        let f = found("[   15.3] node[240]: /opt/node/bin/node: error while loading shared libraries: libatomic.so.1: cannot open shared object file: No such file or directory\n\
                       [   15.3] systemd[1]: agent.service: Main process exited, code=exited, status=127/n/a\n");
        let lib = f.iter().find(|f| f.rule == "missing_library").unwrap();
        assert!(
            lib.cause.starts_with("node could not start") && lib.cause.contains("libatomic.so.1"),
            "{lib:?}"
        );
        assert!(lib.fix.contains("apt-file search libatomic.so.1"));
        assert!(lib.evidence[0].contains("error while loading shared libraries"));
    }

    #[test]
    fn missing_icu_data_is_a_missing_library() {
        let f = found("[   15.3] node[240]: node: could not initialize ICU (check NODE_ICU_DATA or --icu-data-dir parameters)\n");
        assert_eq!(f[0].rule, "missing_library");
        assert!(f[0].cause.contains("ICU"));
    }

    fn agent_with(service: ServiceFacts) -> AgentFacts {
        AgentFacts {
            services: vec![service],
            ..AgentFacts::default()
        }
    }

    #[test]
    fn a_service_the_agent_could_not_execute_is_named() {
        let web = ServiceFacts {
            name: "web".into(),
            spawn_error: Some("Exec format error (os error 8)".into()),
            ..ServiceFacts::default()
        };
        let f = diagnose_with_agent(&Evidence::default(), &agent_with(web));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "exec_format_error");
        assert!(f[0].cause.contains("the program of service web"), "{f:?}");
        assert_eq!(
            f[0].evidence,
            ["web: could not be started: Exec format error (os error 8)"]
        );
    }

    #[test]
    fn a_services_missing_library_is_named_once_with_its_exit() {
        let line = "/usr/sbin/ip: error while loading shared libraries: libmnl.so.0: cannot open shared object file: No such file or directory";
        let ip = ServiceFacts {
            name: "net".into(),
            exits: vec![ExitStatus {
                code: Some(127),
                signal: None,
            }],
            last_lines: vec![OutputLine::stderr(line)],
            ..ServiceFacts::default()
        };
        let alone = diagnose_with_agent(&Evidence::default(), &agent_with(ip.clone()));
        assert_eq!(alone.len(), 1, "{alone:?}");
        assert_eq!(alone[0].rule, "missing_library");
        assert!(alone[0].cause.starts_with("service net could not start"));
        assert!(alone[0].cause.contains("libmnl.so.0"));
        assert_eq!(
            alone[0].evidence,
            [
                format!("net: {line}"),
                "net: exited with status 127".to_owned()
            ]
        );
        // The same library on the console too: still one finding.
        let console = Evidence {
            console: format!("[   15.3] ip[240]: {line}\n"),
            ..Evidence::default()
        };
        let both = diagnose_with_agent(&console, &agent_with(ip));
        assert_eq!(
            both.iter().filter(|f| f.rule == "missing_library").count(),
            1,
            "{both:?}"
        );
    }
}
