//! `missing_interpreter`: a program that is there but cannot start because
//! the file it needs first is not: its ELF interpreter (the dynamic loader
//! a dynamically linked program names, absent from a guest without that
//! libc, such as the busybox-only minimal image) or the interpreter of a
//! script's `#!` line. The kernel calls both "No such file or directory";
//! the agent looks at the program and says which file is missing
//! (`cannot start "/tmp/hello": its ELF interpreter ... is missing`), on
//! the console for `hearth vm run`'s command and in a service's spawn
//! failure. This rule turns those words into a finding.

use hearth_types::api::Finding;

use super::log::message;
use super::{finding, service_lines, Input};

/// How many lines are quoted.
const MAX_LINES: usize = 4;
const ELF: &str = ": its ELF interpreter ";
const SCRIPT: &str = ": its interpreter ";

/// What one such message says.
#[derive(Debug, PartialEq, Eq)]
struct Missing {
    /// The program, as the command named it.
    program: String,
    /// The interpreter's path.
    interpreter: String,
    /// An ELF loader (else a script's `#!` interpreter).
    elf: bool,
}

pub(super) fn check(input: &Input) -> Vec<Finding> {
    let log = &input.console;
    let lines = log.distinct(&log.matching(|l| parse(message(l)).is_some()));
    let mut found: Vec<(Missing, Vec<String>)> = lines
        .iter()
        .filter_map(|&i| {
            let line = &log.lines()[i];
            Some((parse(message(line))?, vec![message(line).to_owned()]))
        })
        .collect();
    for s in &input.agent.services {
        if let Some(m) = s.spawn_error.as_deref().and_then(parse) {
            let line = service_lines::spawn_error(s, s.spawn_error.as_deref().unwrap_or(""));
            let m = Missing {
                program: format!("{} (service {})", m.program, s.name),
                ..m
            };
            found.push((m, vec![line]));
        }
    }
    let Some((first, _)) = found.first() else {
        return Vec::new();
    };
    let cause = cause_of(first);
    let fix = fix_of(first);
    let evidence = found
        .iter()
        .flat_map(|(_, lines)| lines.iter().cloned())
        .take(MAX_LINES)
        .collect();
    vec![finding("missing_interpreter", cause, evidence, fix)]
}

fn cause_of(m: &Missing) -> String {
    if m.elf {
        format!(
            "`{}` could not start: its ELF interpreter {} (the dynamic loader of the libc it \
             was linked against) is missing from the guest, so the kernel said \"No such file \
             or directory\" although the program is there",
            m.program, m.interpreter
        )
    } else {
        format!(
            "`{}` could not start: the interpreter of its #! line, {}, is missing from the \
             guest",
            m.program, m.interpreter
        )
    }
}

fn fix_of(m: &Missing) -> String {
    if m.elf {
        "build the program statically (`-static`, a musl target, or Rust's `-C \
         target-feature=+crt-static`), or run it in an image with that libc (the `debian` \
         image has glibc; the `minimal` image has none); `file PATH` on the host shows the \
         interpreter"
            .to_owned()
    } else {
        format!(
            "install {} in the image, or change the script's #! line to an interpreter the \
             image has",
            m.interpreter
        )
    }
}

/// `cannot start "/tmp/hello": its ELF interpreter /lib64/ld-linux-x86-64.so.2
/// is missing (...)`, anywhere in `text`.
fn parse(text: &str) -> Option<Missing> {
    let (_, rest) = text.split_once("cannot start \"")?;
    let (program, rest) = rest.split_once('"')?;
    let (elf, rest) = if let Some(r) = rest.strip_prefix(ELF) {
        (true, r)
    } else {
        (false, rest.strip_prefix(SCRIPT)?)
    };
    let interpreter = rest.split_whitespace().next()?;
    rest.contains(" is missing").then(|| Missing {
        program: program.to_owned(),
        interpreter: interpreter.to_owned(),
        elf,
    })
}

#[cfg(test)]
mod tests {
    use super::super::diagnose_console as found;
    use super::super::{diagnose_with_agent, AgentFacts, Evidence, ServiceFacts};
    use super::*;

    const ELF_LINE: &str = "hearth: cannot start \"/tmp/hello\": its ELF interpreter \
        /lib64/ld-linux-x86-64.so.2 is missing (a dynamically linked program in a guest without \
        that libc); build it static or use an image with glibc";

    #[test]
    fn the_agents_words_are_parsed() {
        let m = parse(ELF_LINE).unwrap();
        assert_eq!(
            m,
            Missing {
                program: "/tmp/hello".into(),
                interpreter: "/lib64/ld-linux-x86-64.so.2".into(),
                elf: true
            }
        );
        let script = "cannot start \"./run.py\": its interpreter /usr/bin/python3 (from its #! \
                      line) is missing; install it in the image or change the #! line";
        assert!(!parse(script).unwrap().elf);
        let absent = "cannot start \"/no/such\": No such file or directory (os error 2)";
        assert_eq!(parse(absent), None);
    }

    #[test]
    fn a_vm_runs_command_without_its_loader_is_named() {
        // As `hearth vm run` in the minimal image prints it.
        let console = format!(
            "hearth: ready\r\n{ELF_LINE}\r\n\r\nhearth: exit status 127\r\nhearth: power off\r\n"
        );
        let f = found(&console);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].rule, "missing_interpreter");
        assert!(
            f[0].cause.contains("`/tmp/hello`")
                && f[0].cause.contains("/lib64/ld-linux-x86-64.so.2"),
            "{:?}",
            f[0]
        );
        assert!(f[0].fix.contains("statically"), "{:?}", f[0]);
        assert_eq!(f[0].evidence, [ELF_LINE]);
    }

    #[test]
    fn a_service_that_could_not_start_is_named() {
        let msg = "cannot start \"/srv/app.py\": its interpreter /usr/bin/python3 (from its #! \
                   line) is missing; install it in the image or change the #! line";
        let agent = AgentFacts {
            services: vec![ServiceFacts {
                name: "app".into(),
                spawn_error: Some(msg.into()),
                ..ServiceFacts::default()
            }],
            ..AgentFacts::default()
        };
        let f = diagnose_with_agent(&Evidence::default(), &agent);
        let m = f.iter().find(|f| f.rule == "missing_interpreter").unwrap();
        assert!(
            m.cause.contains("`/srv/app.py (service app)`") && m.cause.contains("python3"),
            "{m:?}"
        );
        assert!(m.fix.starts_with("install /usr/bin/python3"), "{m:?}");
        assert_eq!(m.evidence, [format!("app: could not be started: {msg}")]);
    }
}
