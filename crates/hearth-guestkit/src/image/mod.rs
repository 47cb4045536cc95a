//! Root filesystem images: what a VM's shared, read-only disk holds.
//!
//! Each image is one ext4 file, `images/<name>/rootfs.ext4`, labelled
//! `hearth-root`, with a `manifest.json` recording the inputs it was built
//! from. [`ensure_image`] builds an image once, under a cross-process lock,
//! into a scratch folder that is swapped into place atomically, and reuses
//! it until an input changes. Every image runs the same command runner
//! (`hearth-run-command.sh`), which speaks the console protocol of
//! [`hearth_types::console`].

mod apt_sources;
mod debian;
mod ext4;
pub mod guest_command;
mod manifest;
mod minimal;
mod tool;

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

pub use crate::agent::AgentChoice;
pub use ext4::{check_ext4, ext4_label};
pub use guest_command::cmdline_arg;
pub use manifest::{format_utc, BuildInputs, Manifest};
pub use tool::ToolError;
pub(crate) use tool::MKFS_EXT4;

use crate::agent::{self, AgentError, StaticAgent};
use crate::lock::{BuildLock, LockError};
use crate::DataDir;

/// The filesystem label the initramfs looks for (`findfs LABEL=hearth-root`).
pub const ROOT_LABEL: &str = "hearth-root";
/// The image file inside `images/<name>/`.
pub const ROOTFS_FILE: &str = "rootfs.ext4";
/// Where every image keeps the command runner.
pub const RUN_COMMAND_PATH: &str = "/usr/lib/hearth/run-command";
/// The command runner: prints READY, runs `hearth.argv`, reports, powers off.
pub const RUN_COMMAND_SCRIPT: &str = include_str!("hearth-run-command.sh");

/// The images hearth knows how to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageName {
    /// Static busybox and a shell init: builds in about a second.
    Minimal,
    /// Debian bookworm with systemd.
    Debian,
}

impl ImageName {
    pub const ALL: [ImageName; 2] = [ImageName::Minimal, ImageName::Debian];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageName::Minimal => "minimal",
            ImageName::Debian => "debian",
        }
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageName {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| ImageError::UnknownName { name: s.to_owned() })
    }
}

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: ImageName,
    pub rootfs: PathBuf,
    pub size_bytes: u64,
    pub built_at: SystemTime,
    /// True when [`ensure_image`] found it up to date rather than building
    /// it (and always for [`list_images`]).
    pub reused: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("unknown image `{name}`: the images are {}", valid_names())]
    UnknownName { name: String },
    #[error("image {name} is not built: run `hearth image build {name}`")]
    NotBuilt { name: ImageName },
    #[error("{path} is empty, not an ext4 filesystem image")]
    EmptyFile { path: PathBuf },
    #[error("{path} is not an ext4 filesystem image (no ext4 magic 0xEF53 at byte 1080)")]
    NotExt4 { path: PathBuf },
    #[error("could not {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(
        "mkfs.ext4 cannot fill a filesystem from a folder (-d needs e2fsprogs 1.43 or newer; \
         found `{version}`): upgrade e2fsprogs"
    )]
    MkfsTooOld { version: String },
    #[error(
        "{path} not found: the minimal image is made from a static busybox; \
         install it with `apt-get install busybox-static`"
    )]
    BusyboxMissing { path: PathBuf },
    #[error(
        "{path} is not a statically linked busybox (the image has no C library): \
         install it with `apt-get install busybox-static`"
    )]
    BusyboxNotStatic { path: PathBuf },
    #[error(
        "building the debian image needs root, so that unpacking keeps every file's owner: \
         run `hearth image build debian` as root"
    )]
    NeedsRoot,
    #[error("the image manifest {path} is unreadable: rebuild with `hearth image build --force`")]
    BadManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("command argument {index} is empty: the guest cannot receive empty arguments")]
    EmptyArgument { index: usize },
    #[error(
        "the command is too long for the kernel command line ({len} bytes encoded, at most \
         {max}): put a script in the image and run that instead"
    )]
    CommandTooLong { len: usize, max: usize },
}

fn valid_names() -> String {
    let names: Vec<&str> = ImageName::ALL.iter().map(|n| n.as_str()).collect();
    names.join(", ")
}

/// Wraps an I/O error with what was being done to which path.
pub(crate) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_owned();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

/// Builds the image `name` unless an up-to-date one exists (or `force`).
/// Concurrent callers, in any process, build it once; the others wait and
/// reuse it. `progress` receives a line per step.
pub fn ensure_image(
    data: &DataDir,
    name: ImageName,
    force: bool,
    with: AgentChoice,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageInfo, ImageError> {
    let agent = agent::agent_for(with)?;
    let agent_sha256 = agent_digest(agent.as_ref());
    let inputs = match name {
        ImageName::Minimal => minimal::inputs(agent_sha256)?,
        ImageName::Debian => debian::inputs(agent_sha256),
    };
    let _lock = BuildLock::acquire(&data.build_lock(&format!("image-{name}")))?;
    let dir = data.image(name.as_str());
    if !force {
        if let Some(info) = up_to_date(&dir, name, &inputs, progress) {
            progress(&format!("{name}: up to date, reusing it"));
            return Ok(info);
        }
    }
    match &agent {
        Some(a) => progress(&format!("{name}: with the agent {}", a.path.display())),
        None => progress(&format!(
            "{name}: without the guest agent, as asked (--no-agent): no exec, cp, services \
             or agent readiness in its VMs"
        )),
    }
    build(data, name, inputs, agent.as_ref(), progress)
}

/// The manifest's record of the agent: its sha256, or `none`.
fn agent_digest(agent: Option<&StaticAgent>) -> String {
    agent.map_or_else(|| "none".to_owned(), |a| a.sha256.clone())
}

/// The built image if its manifest matches `inputs` and its file is ext4.
fn up_to_date(
    dir: &Path,
    name: ImageName,
    inputs: &BuildInputs,
    progress: &mut dyn FnMut(&str),
) -> Option<ImageInfo> {
    let manifest = match Manifest::read(&dir.join(manifest::MANIFEST_FILE)) {
        Ok(m) => m?,
        Err(e) => {
            progress(&format!("{name}: rebuilding: {e}"));
            return None;
        }
    };
    if manifest.inputs != *inputs {
        progress(&format!("{name}: inputs changed, rebuilding"));
        return None;
    }
    let rootfs = dir.join(ROOTFS_FILE);
    check_ext4(&rootfs).ok()?;
    Some(info(name, rootfs, &manifest, true))
}

fn info(name: ImageName, rootfs: PathBuf, manifest: &Manifest, reused: bool) -> ImageInfo {
    ImageInfo {
        name,
        rootfs,
        size_bytes: manifest.size_bytes,
        built_at: manifest.built_at(),
        reused,
    }
}

/// Builds into `images/.<name>.build-<pid>/`, then swaps it into place.
fn build(
    data: &DataDir,
    name: ImageName,
    inputs: BuildInputs,
    agent: Option<&StaticAgent>,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageInfo, ImageError> {
    let agent = agent.map(|a| a.bytes.as_slice());
    let dir = data.image(name.as_str());
    let parent = dir.parent().expect("images live in a folder");
    std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    remove_stale_builds(parent, name)?;
    let work = Scratch::create(parent.join(format!(".{name}.build-{}", std::process::id())))?;
    let (size, sources) = match name {
        ImageName::Minimal => (minimal::build(&work.0, agent, progress)?, Vec::new()),
        ImageName::Debian => debian::build(&work.0, agent, progress)?,
    };
    let manifest = Manifest::new(name.as_str(), inputs, size, sources);
    manifest.write(&work.0.join(manifest::MANIFEST_FILE))?;
    install(&work.0, &dir)?;
    progress(&format!(
        "{name}: built {}",
        dir.join(ROOTFS_FILE).display()
    ));
    Ok(info(name, dir.join(ROOTFS_FILE), &manifest, false))
}

/// Leftovers of builds that died (we hold the lock: no build is running).
fn remove_stale_builds(images: &Path, name: ImageName) -> Result<(), ImageError> {
    let prefix = format!(".{name}.build-");
    for entry in std::fs::read_dir(images).map_err(io_error("list", images))? {
        let path = entry.map_err(io_error("list", images))?.path();
        let stale = path
            .file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with(&prefix));
        if stale {
            std::fs::remove_dir_all(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(())
}

/// Puts the finished build `work` at `dir`. An existing image is swapped
/// out in one step (renameat2 RENAME_EXCHANGE), so a reader sees either
/// the old image or the new one; VMs running from the old file keep it.
fn install(work: &Path, dir: &Path) -> Result<(), ImageError> {
    if !dir.exists() {
        return std::fs::rename(work, dir).map_err(io_error("move the new image to", dir));
    }
    exchange(work, dir).map_err(io_error("swap in the new image at", dir))?;
    std::fs::remove_dir_all(work).map_err(io_error("remove the old image at", work))
}

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are NUL-terminated strings alive for the call;
    // renameat2(2) only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A scratch folder removed on drop unless it was moved away.
struct Scratch(PathBuf);

impl Scratch {
    fn create(path: PathBuf) -> Result<Self, ImageError> {
        std::fs::create_dir(&path).map_err(io_error("create", &path))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // After a successful install the folder is gone already.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The image file of a built image, checked to be ext4.
pub fn find_image(data: &DataDir, name: &str) -> Result<PathBuf, ImageError> {
    let name: ImageName = name.parse()?;
    let dir = data.image(name.as_str());
    let rootfs = dir.join(ROOTFS_FILE);
    if Manifest::read(&dir.join(manifest::MANIFEST_FILE))?.is_none() || !rootfs.exists() {
        return Err(ImageError::NotBuilt { name });
    }
    check_ext4(&rootfs)?;
    Ok(rootfs)
}

/// Every built image, in [`ImageName::ALL`] order.
pub fn list_images(data: &DataDir) -> Result<Vec<ImageInfo>, ImageError> {
    let mut out = Vec::new();
    for name in ImageName::ALL {
        let dir = data.image(name.as_str());
        let rootfs = dir.join(ROOTFS_FILE);
        if let Some(m) = Manifest::read(&dir.join(manifest::MANIFEST_FILE))? {
            if rootfs.exists() {
                out.push(info(name, rootfs, &m, true));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use hearth_types::console::{EXIT_STATUS, POWER_OFF, READY};

    use super::*;

    #[test]
    fn names_parse_and_print_and_unknown_ones_list_the_valid_ones() {
        for name in ImageName::ALL {
            assert_eq!(name.to_string().parse::<ImageName>().unwrap(), name);
        }
        let err = "ubuntu".parse::<ImageName>().unwrap_err().to_string();
        assert!(
            err.contains("`ubuntu`") && err.contains("minimal, debian"),
            "{err}"
        );
    }

    #[test]
    fn scripts_print_the_exact_console_markers() {
        assert!(RUN_COMMAND_SCRIPT.contains(&format!("echo \"{READY}\"")));
        assert!(RUN_COMMAND_SCRIPT.contains(&format!("echo \"{EXIT_STATUS}$status\"")));
        assert!(RUN_COMMAND_SCRIPT.contains(&format!("echo \"{POWER_OFF}\"")));
        assert!(minimal::INIT_SCRIPT.contains(&format!("echo \"{POWER_OFF}\"")));
        assert!(minimal::INIT_SCRIPT.contains(RUN_COMMAND_PATH));
    }

    #[test]
    fn runner_builds_argv_without_eval() {
        let mut code = RUN_COMMAND_SCRIPT
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'));
        assert!(code.all(|l| !l.contains("eval")));
        assert!(RUN_COMMAND_SCRIPT.contains("(\"$@\")"));
        assert!(RUN_COMMAND_SCRIPT.contains("set -f"));
    }

    #[test]
    fn not_built_error_says_how_to_build() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let err = find_image(&data, "minimal").unwrap_err().to_string();
        assert_eq!(
            err,
            "image minimal is not built: run `hearth image build minimal`"
        );
        assert!(list_images(&data).unwrap().is_empty());
    }

    #[test]
    fn install_swaps_an_existing_image_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let (work, live) = (dir.path().join("work"), dir.path().join("live"));
        for (d, text) in [(&work, "new"), (&live, "old")] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("f"), text).unwrap();
        }
        install(&work, &live).unwrap();
        assert_eq!(std::fs::read_to_string(live.join("f")).unwrap(), "new");
        assert!(!work.exists());
    }
}
