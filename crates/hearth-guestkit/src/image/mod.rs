//! Root filesystem images: what a VM's shared, read-only disk holds.
//!
//! An image is made from a [`recipe`] (a TOML file: its base, packages,
//! npm packages, users, files, environment, agent configuration and VM
//! size); hearth's own images are recipes embedded in the binary. Each
//! image is one ext4 file, `images/<name>/rootfs.ext4`, labelled
//! `hearth-root`, with a `manifest.json` recording the inputs it was built
//! from and what the build resolved. [`ensure_recipe`] builds an image
//! once, under a cross-process lock, into a scratch folder that is swapped
//! into place atomically, and reuses it until an input changes. Every
//! image runs the same command runner (`hearth-run-command.sh`), which
//! speaks the console protocol of [`hearth_types::console`].

mod apt_sources;
mod build_log;
mod debian;
mod ext4;
pub mod guest_command;
mod manifest;
mod minimal;
pub mod recipe;
mod steps;
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
pub use manifest::{format_utc, BuildInputs, BuildOutput, Manifest, Resolved};
pub use recipe::{BaseRecipe, LoadedRecipe, Recipe, RecipeError, VmSize};
pub use steps::AGENT_CONFIG_PATH;
pub use tool::ToolError;
pub(crate) use tool::MKFS_EXT4;

use self::build_log::BuildLog;
use self::recipe::{check_image_name, Base};
use crate::agent::{self, AgentError, StaticAgent};
use crate::lock::{BuildLock, LockError};
use crate::DataDir;

/// The filesystem label the initramfs looks for (`findfs LABEL=hearth-root`).
pub const ROOT_LABEL: &str = "hearth-root";
/// The image file inside `images/<name>/`.
pub const ROOTFS_FILE: &str = "rootfs.ext4";
/// The recipe an image was built from, copied into `images/<name>/`.
pub const RECIPE_FILE: &str = "recipe.toml";
/// The build's log, kept in `images/<name>/`.
pub const BUILD_LOG_FILE: &str = "build.log";
/// Where every image keeps the command runner.
pub const RUN_COMMAND_PATH: &str = "/usr/lib/hearth/run-command";
/// The command runner: prints READY, runs `hearth.argv`, reports, powers off.
pub const RUN_COMMAND_SCRIPT: &str = include_str!("hearth-run-command.sh");

/// The images hearth ships recipes for (`images/*.toml` in the source).
/// Any other built image is named by its recipe's `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageName {
    /// Static busybox and the agent: builds in about a second.
    Minimal,
    /// Debian bookworm with systemd.
    Debian,
    /// Debian with Node.js and the AI command-line tools.
    Cli,
    /// A desktop with Chromium, watched and clicked through the viewer.
    Browser,
    /// The desktop and the AI command-line tools: login sessions' VMs.
    Login,
}

impl ImageName {
    pub const ALL: [ImageName; 5] = [
        ImageName::Minimal,
        ImageName::Debian,
        ImageName::Cli,
        ImageName::Browser,
        ImageName::Login,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageName::Minimal => "minimal",
            ImageName::Debian => "debian",
            ImageName::Cli => "cli",
            ImageName::Browser => "browser",
            ImageName::Login => "login",
        }
    }

    /// Its recipe, embedded in the binary.
    pub fn recipe(self) -> LoadedRecipe {
        LoadedRecipe::builtin(self.as_str())
            .expect("every built-in name has a recipe")
            .expect("built-in recipes are checked by a unit test")
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

/// A built-in recipe by name, or a recipe file when `arg` is a path (it
/// has a `/` or ends in `.toml`).
pub fn load_recipe(arg: &str) -> Result<LoadedRecipe, ImageError> {
    if arg.contains('/') || arg.ends_with(".toml") {
        return Ok(LoadedRecipe::from_file(Path::new(arg))?);
    }
    Ok(arg.parse::<ImageName>()?.recipe())
}

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: String,
    pub rootfs: PathBuf,
    pub size_bytes: u64,
    pub built_at: SystemTime,
    /// True when [`ensure_recipe`] found it up to date rather than building
    /// it (and always for [`list_images`]).
    pub reused: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "unknown image `{name}`: the built-in recipes are {}; or give a recipe file's path",
        valid_names()
    )]
    UnknownName { name: String },
    #[error("{message}")]
    InvalidName { message: String },
    #[error(
        "image {name} is not built: run `hearth image build {name}` (a built-in name or a \
         recipe file)"
    )]
    NotBuilt { name: String },
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
        "building an image on a Debian base needs root, so that unpacking keeps every file's \
         owner: run `hearth image build` as root"
    )]
    NeedsRoot,
    #[error(
        "the recipe {name} declares an agent configuration, but no static hearth-agent was \
         found: {}",
        agent::HOW_TO_BUILD
    )]
    NeedsAgent { name: String },
    #[error("the image manifest {path} is unreadable: rebuild with `hearth image build --force`")]
    BadManifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("{message}")]
    Step { message: String },
    #[error(
        "the recipe {name} still names its base recipe {reference:?}: load recipes with \
         `load_recipe` or `LoadedRecipe`, which lay a recipe over its base"
    )]
    UnresolvedBase { name: String, reference: String },
    #[error("image {image}: step `{step}` failed for {what}; the build log is kept at {}", log.display())]
    StepFailed {
        image: String,
        step: &'static str,
        what: String,
        log: PathBuf,
        #[source]
        source: Box<ImageError>,
    },
    #[error("image {name} is being built right now: try again when the build is done")]
    BuildInProgress { name: String },
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

/// Builds the built-in image `name` unless an up-to-date one exists (or
/// `force`); see [`ensure_recipe`].
pub fn ensure_image(
    data: &DataDir,
    name: ImageName,
    force: bool,
    with: AgentChoice,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageInfo, ImageError> {
    ensure_recipe(data, &name.recipe(), force, with, progress)
}

/// Builds the image of `loaded` unless an up-to-date one exists (or
/// `force`). Concurrent callers, in any process, build it once; the others
/// wait and reuse it. `progress` receives a line per step.
pub fn ensure_recipe(
    data: &DataDir,
    loaded: &LoadedRecipe,
    force: bool,
    with: AgentChoice,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageInfo, ImageError> {
    let name = loaded.recipe.name.as_str();
    let agent = agent::agent_for(with)?;
    if agent.is_none() && loaded.recipe.needs_agent() {
        return Err(ImageError::NeedsAgent {
            name: name.to_owned(),
        });
    }
    let inputs = inputs(loaded, agent_digest(agent.as_ref()))?;
    let _lock = BuildLock::acquire(&data.build_lock(&format!("image-{name}")))?;
    let dir = data.image(name);
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
    build(data, loaded, inputs, agent.as_ref(), progress)
}

/// What the image depends on: the recipe, its base's code and files, the
/// host's busybox for the minimal base, and the agent.
fn inputs(loaded: &LoadedRecipe, agent_sha256: String) -> Result<BuildInputs, ImageError> {
    let recipe_sha256 = loaded.digest();
    Ok(match &loaded.recipe.base {
        Base::Minimal => BuildInputs {
            recipe_sha256,
            base: "minimal".to_owned(),
            base_version: minimal::BASE_VERSION,
            scripts_sha256: minimal::scripts_sha256(),
            busybox_sha256: Some(minimal::busybox_sha256()?),
            agent_sha256,
        },
        Base::Debian(suite) => BuildInputs {
            recipe_sha256,
            base: format!("debian:{suite}"),
            base_version: debian::BASE_VERSION,
            scripts_sha256: debian::scripts_sha256(),
            busybox_sha256: None,
            agent_sha256,
        },
        Base::Recipe(reference) => return Err(unresolved(loaded, reference)),
    })
}

/// A recipe built without being laid over its base (a caller that made a
/// `LoadedRecipe` by hand): refused, never built half.
fn unresolved(loaded: &LoadedRecipe, reference: &str) -> ImageError {
    ImageError::UnresolvedBase {
        name: loaded.recipe.name.clone(),
        reference: reference.to_owned(),
    }
}

/// The manifest's record of the agent: its sha256, or `none`.
fn agent_digest(agent: Option<&StaticAgent>) -> String {
    agent.map_or_else(|| "none".to_owned(), |a| a.sha256.clone())
}

/// The built image if its manifest matches `inputs` and its file is ext4.
fn up_to_date(
    dir: &Path,
    name: &str,
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

fn info(name: &str, rootfs: PathBuf, manifest: &Manifest, reused: bool) -> ImageInfo {
    ImageInfo {
        name: name.to_owned(),
        rootfs,
        size_bytes: manifest.size_bytes,
        built_at: manifest.built_at(),
        reused,
    }
}

/// Where a failed build of `name` leaves its log.
pub fn failed_log(data: &DataDir, name: &str) -> PathBuf {
    data.root()
        .join("images")
        .join(format!("{name}.failed.log"))
}

/// Builds into `images/.<name>.build-<pid>/`, then swaps it into place.
fn build(
    data: &DataDir,
    loaded: &LoadedRecipe,
    inputs: BuildInputs,
    agent: Option<&StaticAgent>,
    progress: &mut dyn FnMut(&str),
) -> Result<ImageInfo, ImageError> {
    let name = loaded.recipe.name.as_str();
    let agent = agent.map(|a| a.bytes.as_slice());
    let dir = data.image(name);
    let parent = dir.parent().expect("images live in a folder");
    std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    remove_stale_builds(parent, name)?;
    let work = Scratch::create(parent.join(format!(".{name}.build-{}", std::process::id())))?;
    let log_path = work.0.join(BUILD_LOG_FILE);
    let kept_at = failed_log(data, name);
    let mut log = BuildLog::create(&log_path, name, kept_at.clone(), progress)?;
    log.note(&format!("recipe {}:\n{}", loaded.origin, loaded.text));
    for base in &loaded.bases {
        log.note(&format!(
            "laid over the recipe {} (sha256 {})",
            base.origin, base.sha256
        ));
    }
    let out = match build_in(data, &work.0, loaded, agent, &mut log) {
        Ok(out) => out,
        Err(e) => {
            log.note(&format!("failed: {e}"));
            drop(log);
            // Keep the log where the error says it is.
            let _ = std::fs::rename(&log_path, &kept_at);
            return Err(e);
        }
    };
    let manifest = Manifest::new(name, &loaded.origin, inputs, loaded.recipe.vm, out);
    manifest.write(&work.0.join(manifest::MANIFEST_FILE))?;
    let recipe_copy = work.0.join(RECIPE_FILE);
    std::fs::write(&recipe_copy, &loaded.text).map_err(io_error("write", &recipe_copy))?;
    log.say(&format!(
        "{name}: built {}",
        dir.join(ROOTFS_FILE).display()
    ));
    drop(log);
    install(&work.0, &dir)?;
    let _ = std::fs::remove_file(&kept_at);
    Ok(info(name, dir.join(ROOTFS_FILE), &manifest, false))
}

/// The base, the recipe's steps, then the ext4.
fn build_in(
    data: &DataDir,
    work: &Path,
    loaded: &LoadedRecipe,
    agent: Option<&[u8]>,
    log: &mut BuildLog,
) -> Result<BuildOutput, ImageError> {
    let recipe = &loaded.recipe;
    let name = recipe.name.as_str();
    let tree = work.join("tree");
    let mut out = BuildOutput::default();
    match &recipe.base {
        Base::Minimal => {
            log.say(&format!("{name}: staging busybox and the init"));
            minimal::stage(&tree, agent)?;
        }
        Base::Debian(suite) => {
            out.packages = debian::packages(&recipe.packages);
            out.sources = debian::bootstrap(work, &tree, suite, &out.packages, agent, log)?;
        }
        Base::Recipe(reference) => return Err(unresolved(loaded, reference)),
    }
    steps::apply(data, &tree, loaded, log)?;
    out.resolved = Resolved {
        debian: steps::dpkg_versions(&tree),
        npm: steps::npm_versions(&tree, recipe),
    };
    log.say(&format!("{name}: making the ext4"));
    out.size_bytes = ext4::make_ext4_from_dir(&tree, &work.join(ROOTFS_FILE), ROOT_LABEL)?;
    std::fs::remove_dir_all(&tree).map_err(io_error("remove", &tree))?;
    Ok(out)
}

/// Leftovers of builds that died (we hold the lock: no build is running).
fn remove_stale_builds(images: &Path, name: &str) -> Result<(), ImageError> {
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

/// The manifest of the built image `name`; `Ok(None)` when it is not built.
pub fn read_manifest(data: &DataDir, name: &str) -> Result<Option<Manifest>, ImageError> {
    check_image_name(name).map_err(|message| ImageError::InvalidName { message })?;
    Manifest::read(&data.image(name).join(manifest::MANIFEST_FILE))
}

/// The image file of a built image, checked to be ext4.
pub fn find_image(data: &DataDir, name: &str) -> Result<PathBuf, ImageError> {
    let rootfs = data.image(name).join(ROOTFS_FILE);
    if read_manifest(data, name)?.is_none() || !rootfs.exists() {
        return Err(ImageError::NotBuilt {
            name: name.to_owned(),
        });
    }
    check_ext4(&rootfs)?;
    Ok(rootfs)
}

/// The VM size the recipe of a built image asks for, if it names one.
pub fn image_vm_size(data: &DataDir, name: &str) -> Option<VmSize> {
    read_manifest(data, name).ok()??.vm
}

/// Every built image, by name.
pub fn list_images(data: &DataDir) -> Result<Vec<ImageInfo>, ImageError> {
    let images = data.root().join("images");
    let entries = match std::fs::read_dir(&images) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("list", &images)(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| check_image_name(n).is_ok())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let rootfs = data.image(&name).join(ROOTFS_FILE);
        // An image whose manifest cannot be read (written by an older
        // hearth: it rebuilds at its next build) is left out, not an error
        // that hides every other image.
        if let Ok(Some(m)) = read_manifest(data, &name) {
            if rootfs.exists() {
                out.push(info(&name, rootfs, &m, true));
            }
        }
    }
    Ok(out)
}

/// Removes the built image `name`. It takes the image's build lock without
/// waiting, so a build in progress is never removed; VMs already running
/// from the image keep their open file (Linux frees it when they stop), new
/// VMs can no longer use it.
pub fn remove_image(data: &DataDir, name: &str) -> Result<(), ImageError> {
    check_image_name(name).map_err(|message| ImageError::InvalidName { message })?;
    let lock = BuildLock::try_acquire(&data.build_lock(&format!("image-{name}")))?;
    let Some(_lock) = lock else {
        return Err(ImageError::BuildInProgress {
            name: name.to_owned(),
        });
    };
    let dir = data.image(name);
    if !dir.exists() {
        return Err(ImageError::NotBuilt {
            name: name.to_owned(),
        });
    }
    // Renamed first, so no reader ever sees half an image.
    let doomed = dir.with_file_name(format!(".{name}.removing-{}", std::process::id()));
    std::fs::rename(&dir, &doomed).map_err(io_error("move away", &dir))?;
    std::fs::remove_dir_all(&doomed).map_err(io_error("remove", &doomed))?;
    let _ = std::fs::remove_file(failed_log(data, name));
    Ok(())
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
            err.contains("`ubuntu`") && err.contains("minimal, debian, cli"),
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
        assert!(
            err.starts_with("image minimal is not built: run `hearth image build minimal`"),
            "{err}"
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
