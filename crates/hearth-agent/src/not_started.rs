//! Why a program could not be started, naming the file that is missing.
//!
//! execve(2) fails with ENOENT both when the program is not there and when
//! the loader it names is not: a glibc program copied into the busybox-only
//! minimal image is "No such file or directory" although it is right there.
//! For execs, services and the init's command alike, the agent looks at the
//! program (its ELF interpreter and libraries, or a script's `#!` line) and
//! says which one is missing. The host's diagnosis reads these messages
//! (`missing_interpreter`).

use std::io::{self, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::elf;

/// Where the dynamic loader looks by default (and Debian's multiarch
/// directories): a library found in none of them is reported missing. Best
/// effort: `DT_RUNPATH` and `ld.so.conf` are not read.
const LIBRARY_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/local/lib",
];
/// Searched for a program named without a `/` when the command has no PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The longest `#!` line read.
const MAX_SHEBANG: usize = 256;

/// `cannot start "PROGRAM": WHY`, where WHY names a missing interpreter
/// when that is what ENOENT meant, and is the system's error otherwise.
/// `env` is the command's environment (its PATH finds the program).
pub fn message(program: &str, env: &[(String, String)], error: &io::Error) -> String {
    let why = (error.kind() == ErrorKind::NotFound)
        .then(|| locate(program, env))
        .flatten()
        .and_then(|path| missing_interpreter(&path))
        .unwrap_or_else(|| error.to_string());
    format!("cannot start {program:?}: {why}")
}

/// The file `program` names: itself with a `/`, else the first match on
/// the PATH.
fn locate(program: &str, env: &[(String, String)]) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program)).filter(|p| p.is_file());
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| DEFAULT_PATH.to_owned());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Why the existing file at `path` cannot run: its missing ELF interpreter
/// (and libraries), or its script's missing interpreter; `None` when both
/// are there (the ENOENT came from elsewhere).
fn missing_interpreter(path: &Path) -> Option<String> {
    if let Some(interp) = shebang(path) {
        return (!Path::new(&interp).exists()).then(|| {
            format!(
                "its interpreter {interp} (from its #! line) is missing; install it in the image \
                 or change the #! line"
            )
        });
    }
    let dynamic = elf::read(path)?;
    let interp = dynamic.interpreter?;
    if Path::new(&interp).exists() {
        return None;
    }
    let libc = if interp.contains("musl") {
        "musl"
    } else {
        "glibc"
    };
    let mut why = format!(
        "its ELF interpreter {interp} is missing (a dynamically linked program in a guest \
         without that libc); build it static or use an image with {libc}"
    );
    let missing = missing_libraries(&dynamic.needed, LIBRARY_DIRS);
    if !missing.is_empty() {
        why.push_str(&format!(
            "; it also needs {}, found in none of {}",
            missing.join(", "),
            LIBRARY_DIRS.join(" ")
        ));
    }
    Some(why)
}

/// The interpreter of a `#!` script: the first word after `#!`.
fn shebang(path: &Path) -> Option<String> {
    let mut head = Vec::with_capacity(MAX_SHEBANG);
    std::fs::File::open(path)
        .ok()?
        .take(MAX_SHEBANG as u64)
        .read_to_end(&mut head)
        .ok()?;
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    line.split_whitespace().next().map(str::to_owned)
}

/// The names in `needed` found in none of `dirs` (a name with a `/` is a
/// path of its own).
fn missing_libraries(needed: &[String], dirs: &[&str]) -> Vec<String> {
    needed
        .iter()
        .filter(|lib| match lib.contains('/') {
            true => !Path::new(lib.as_str()).exists(),
            false => !dirs
                .iter()
                .any(|d| Path::new(d).join(lib.as_str()).exists()),
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn enoent() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOENT)
    }

    /// A copy of `/bin/ls` whose interpreter path is rewritten to `interp`
    /// (same length), as a program built for another libc looks in a guest.
    fn ls_with_interpreter(dir: &Path, interp: &str) -> PathBuf {
        let mut ls = std::fs::read("/bin/ls").unwrap();
        let old = elf::read(Path::new("/bin/ls"))
            .unwrap()
            .interpreter
            .unwrap();
        assert_eq!(old.len(), interp.len(), "same length, so offsets hold");
        let at = ls
            .windows(old.len())
            .position(|w| w == old.as_bytes())
            .unwrap();
        ls[at..at + old.len()].copy_from_slice(interp.as_bytes());
        let path = dir.join("hello");
        std::fs::write(&path, ls).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_missing_program_keeps_the_systems_words() {
        let m = message("/no/such/program", &[], &enoent());
        assert_eq!(
            m,
            "cannot start \"/no/such/program\": No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_missing_elf_interpreter_is_named_and_spawning_shows_why() {
        let dir = tempfile::tempdir().unwrap();
        let real = elf::read(Path::new("/bin/ls"))
            .unwrap()
            .interpreter
            .unwrap();
        let fake = &format!("/nop{}", &real[4..]);
        let hello = ls_with_interpreter(dir.path(), fake);
        // What the kernel says: ENOENT although the file exists.
        let err = std::process::Command::new(&hello).spawn().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let m = message(hello.to_str().unwrap(), &[], &err);
        assert!(
            m.contains(&format!("its ELF interpreter {fake} is missing")),
            "{m}"
        );
        assert!(
            m.contains("build it static or use an image with glibc"),
            "{m}"
        );
        // The host has libc.so.6: only the interpreter is missing.
        assert!(!m.contains("also needs"), "{m}");
    }

    #[test]
    fn a_program_on_the_path_is_looked_at_too() {
        let dir = tempfile::tempdir().unwrap();
        let real = elf::read(Path::new("/bin/ls"))
            .unwrap()
            .interpreter
            .unwrap();
        let fake = format!("/nop{}", &real[4..]);
        ls_with_interpreter(dir.path(), &fake);
        let env = [("PATH".to_owned(), dir.path().display().to_string())];
        let m = message("hello", &env, &enoent());
        assert!(
            m.starts_with("cannot start \"hello\": its ELF interpreter"),
            "{m}"
        );
    }

    #[test]
    fn a_scripts_missing_interpreter_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s.py");
        std::fs::write(&script, "#!/usr/bin/no-such-python3 -u\nprint('hi')\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = std::process::Command::new(&script).spawn().unwrap_err();
        let m = message(script.to_str().unwrap(), &[], &err);
        assert!(
            m.ends_with(
                "its interpreter /usr/bin/no-such-python3 (from its #! line) is missing; \
                 install it in the image or change the #! line"
            ),
            "{m}"
        );
    }

    #[test]
    fn a_present_interpreter_or_another_error_is_left_alone() {
        let m = message("/bin/ls", &[], &enoent());
        assert!(m.ends_with("No such file or directory (os error 2)"), "{m}");
        let denied = io::Error::from_raw_os_error(libc::EACCES);
        let m = message("/bin/ls", &[], &denied);
        assert!(m.ends_with("Permission denied (os error 13)"), "{m}");
    }

    #[test]
    fn libraries_missing_from_every_directory_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libhere.so.1"), "").unwrap();
        let dirs = [dir.path().to_str().unwrap()];
        let needed = ["libhere.so.1".to_owned(), "libgone.so.2".to_owned()];
        assert_eq!(missing_libraries(&needed, &dirs), ["libgone.so.2"]);
    }
}
