//! The `minimal` base: Debian's static busybox, the agent (or a
//! shell-script init), and nothing else. Made as a plain folder (no root,
//! no mounts) and turned into an ext4 in about a second, it is what the
//! `minimal` image tests and demos boot is made of.

use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::manifest::sha256_of_texts;
use super::tool::Tool;
use super::{io_error, ImageError, RUN_COMMAND_PATH, RUN_COMMAND_SCRIPT};

/// Bump when this base changes what it produces outside the scripts.
/// 2: with the agent, /sbin/init is the agent.
pub const BASE_VERSION: u32 = 2;

/// Where Debian's `busybox-static` package installs its binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";
const BUSYBOX: Tool = Tool {
    program: BUSYBOX_PATH,
    package: "busybox-static",
};

/// PID 1 of the image.
pub const INIT_SCRIPT: &str = include_str!("minimal-init.sh");
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
const GROUP: &str = "root:x:0:\n";
const HOSTNAME: &str = "hearth\n";

/// Applets never linked: the binary itself, and the inits we replace.
const SKIPPED_APPLETS: [&str; 3] = ["bin/busybox", "sbin/init", "linuxrc"];

/// Folders with their modes.
const DIRS: [(&str, u32); 13] = [
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("usr/lib/hearth", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("run", 0o755),
    ("mnt", 0o755),
    ("root", 0o700),
    ("tmp", 0o1777),
];

/// Where the image carries the agent, when it has one.
pub const AGENT_PATH: &str = "bin/hearth-agent";
/// `/sbin/init` of an image with the agent: a link to it.
const AGENT_INIT_TARGET: &str = "../bin/hearth-agent";

/// The base's embedded files, hashed for the manifest's inputs.
pub fn scripts_sha256() -> String {
    sha256_of_texts(&[INIT_SCRIPT, RUN_COMMAND_SCRIPT, PASSWD, GROUP, HOSTNAME])
}

/// The host's static busybox, which the image copies.
pub fn busybox_sha256() -> Result<String, ImageError> {
    let busybox = read_busybox(Path::new(BUSYBOX_PATH))?;
    Ok(hex::encode(Sha256::digest(&busybox)))
}

/// Lays out the image's folder tree in `root` (which must not exist), with
/// the agent (a static binary) as `/bin/hearth-agent` when given.
pub fn stage(root: &Path, agent: Option<&[u8]>) -> Result<(), ImageError> {
    let busybox = read_busybox(Path::new(BUSYBOX_PATH))?;
    make_dir(root, 0o755)?;
    for (dir, mode) in DIRS {
        make_dir(&root.join(dir), mode)?;
    }
    write_file(&root.join("bin/busybox"), &busybox, 0o755)?;
    link_applets(root)?;
    let init = root.join("sbin/init");
    match agent {
        // The agent is the init (it mounts, reaps, runs hearth.argv and
        // powers off itself); the script stays for images without it.
        Some(agent) => {
            write_file(&root.join(AGENT_PATH), agent, 0o755)?;
            symlink(AGENT_INIT_TARGET, &init).map_err(io_error("link", &init))?;
        }
        None => write_file(&init, INIT_SCRIPT.as_bytes(), 0o755)?,
    }
    let runner = root.join(RUN_COMMAND_PATH.trim_start_matches('/'));
    write_file(&runner, RUN_COMMAND_SCRIPT.as_bytes(), 0o755)?;
    write_file(&root.join("etc/passwd"), PASSWD.as_bytes(), 0o644)?;
    write_file(&root.join("etc/group"), GROUP.as_bytes(), 0o644)?;
    write_file(&root.join("etc/hostname"), HOSTNAME.as_bytes(), 0o644)
}

/// The host's busybox, which must be the static one (the image has no libc).
fn read_busybox(path: &Path) -> Result<Vec<u8>, ImageError> {
    let bytes = fs::read(path).map_err(|_| ImageError::BusyboxMissing {
        path: path.to_owned(),
    })?;
    if !crate::agent::is_static_elf(&bytes) {
        return Err(ImageError::BusyboxNotStatic {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// One relative symlink per applet, where `busybox --list-full` puts it.
fn link_applets(root: &Path) -> Result<(), ImageError> {
    let mut cmd = BUSYBOX.command();
    cmd.arg("--list-full");
    let list = BUSYBOX.run(&mut cmd)?;
    for applet in list.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if SKIPPED_APPLETS.contains(&applet) {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io_error("create", parent))?;
        }
        symlink(relative_busybox(applet), &link).map_err(io_error("link", &link))?;
    }
    Ok(())
}

/// The link target from `applet` (e.g. `usr/sbin/chroot`) to `bin/busybox`.
fn relative_busybox(applet: &str) -> PathBuf {
    let depth = Path::new(applet).components().count().saturating_sub(1);
    if depth == 1 && applet.starts_with("bin/") {
        return PathBuf::from("busybox");
    }
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.join("bin/busybox")
}

fn make_dir(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_error("create", path))?;
    // The umask may have cleared bits (the sticky /tmp, say): set them all.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error("chmod", path))
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), ImageError> {
    fs::write(path, content).map_err(io_error("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error("chmod", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_links_are_relative_and_land_on_busybox() {
        assert_eq!(relative_busybox("bin/sh"), Path::new("busybox"));
        assert_eq!(relative_busybox("sbin/reboot"), Path::new("../bin/busybox"));
        assert_eq!(
            relative_busybox("usr/sbin/chroot"),
            Path::new("../../bin/busybox")
        );
    }

    #[test]
    fn staged_tree_has_init_runner_and_relative_applets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        stage(&root, None).unwrap();
        assert!(!root.join(AGENT_PATH).exists());
        let init = fs::read_to_string(root.join("sbin/init")).unwrap();
        assert_eq!(init, INIT_SCRIPT);
        assert!(root.join("usr/lib/hearth/run-command").is_file());
        let sh = fs::read_link(root.join("bin/sh")).unwrap();
        assert_eq!(sh, Path::new("busybox"));
        let reboot = fs::read_link(root.join("sbin/reboot")).unwrap();
        assert!(reboot.is_relative());
        assert!(fs::symlink_metadata(root.join("bin/busybox"))
            .unwrap()
            .is_file());
        let tmp_mode = fs::metadata(root.join("tmp")).unwrap().permissions().mode();
        assert_eq!(tmp_mode & 0o7777, 0o1777);
    }

    #[test]
    fn a_given_agent_is_staged_executable_and_is_the_init() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        stage(&root, Some(b"agent bytes")).unwrap();
        let agent = root.join(AGENT_PATH);
        assert_eq!(fs::read(&agent).unwrap(), b"agent bytes");
        assert_eq!(
            fs::metadata(&agent).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let init = fs::read_link(root.join("sbin/init")).unwrap();
        assert_eq!(init, Path::new("../bin/hearth-agent"));
        assert_eq!(fs::read(root.join("sbin/init")).unwrap(), b"agent bytes");
        // The runner is still there for images without the agent.
        assert!(root.join("usr/lib/hearth/run-command").is_file());
    }
}
