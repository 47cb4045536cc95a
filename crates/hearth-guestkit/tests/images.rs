//! Images and writable layers, built for real with the host's tools in the
//! shared test data directory (so later boot tests reuse them).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hearth_guestkit::image::{
    check_ext4, cmdline_arg, ensure_image, ext4_label, find_image, list_images, AgentChoice,
    ImageName, ROOT_LABEL, RUN_COMMAND_SCRIPT,
};
use hearth_guestkit::layer::{
    create_layer, ensure_layer_template, DEFAULT_LAYER_SIZE, LAYER_LABEL,
};
use hearth_guestkit::DataDir;
use hearth_testkit::test_data_dir;

/// The agent these tests build with: the one `setup` named, or (with no
/// static glibc to build one) none, asked for.
fn with_agent() -> AgentChoice {
    match std::env::var_os("HEARTH_AGENT") {
        Some(_) => AgentChoice::Find,
        None => AgentChoice::Without,
    }
}

/// Every test starts here: with a static agent available, `HEARTH_AGENT`
/// names it, as `scripts/test` and the CLI tests do, so every process that
/// builds the shared minimal image builds the same one. Set once, before
/// any test reads the environment.
fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("HEARTH_AGENT").is_none() {
            if let Some(agent) = hearth_testkit::static_agent() {
                std::env::set_var("HEARTH_AGENT", agent);
            }
        }
    });
}

fn shared() -> DataDir {
    setup();
    DataDir::new(test_data_dir())
}

fn private(dir: &Path) -> DataDir {
    setup();
    DataDir::new(dir)
}

fn log(line: &str) {
    eprintln!("{line}");
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a debugfs request against an ext4 file (read-only) and returns what
/// it printed.
fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .expect("debugfs (e2fsprogs) runs");
    assert!(out.status.success(), "debugfs {request}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn minimal_image_builds_once_then_is_reused() {
    let data = shared();
    let first = ensure_image(&data, ImageName::Minimal, false, with_agent(), &mut log).unwrap();
    let before = mtime(&first.rootfs);
    let started = Instant::now();
    let again = ensure_image(&data, ImageName::Minimal, false, with_agent(), &mut log).unwrap();
    assert!(again.reused, "second ensure rebuilt the image");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(mtime(&again.rootfs), before);
    assert_eq!(again.built_at, first.built_at);
    assert_eq!(find_image(&data, "minimal").unwrap(), again.rootfs);
    check_ext4(&again.rootfs).unwrap();
    assert_eq!(ext4_label(&again.rootfs).unwrap(), ROOT_LABEL);
    let size = std::fs::metadata(&again.rootfs).unwrap().len();
    assert_eq!(size, again.size_bytes);
    assert!((16 << 20..=32 << 20).contains(&size), "{size} bytes");
}

#[test]
fn minimal_image_holds_the_init_the_runner_and_relative_applets() {
    let data = shared();
    let info = ensure_image(&data, ImageName::Minimal, false, with_agent(), &mut log).unwrap();
    // With the agent, /sbin/init is the agent (see the next test); without
    // it, the busybox script that hands over to run-command.
    if std::env::var_os("HEARTH_AGENT").is_none() {
        let init = debugfs(&info.rootfs, "cat /sbin/init");
        assert!(init.starts_with("#!/bin/sh\n") && init.contains("run-command"));
    }
    let runner = debugfs(&info.rootfs, "cat /usr/lib/hearth/run-command");
    assert_eq!(runner, RUN_COMMAND_SCRIPT);
    let sh = debugfs(&info.rootfs, "stat /bin/sh");
    assert!(sh.contains("Fast link dest: \"busybox\""), "{sh}");
    let reboot = debugfs(&info.rootfs, "stat /sbin/reboot");
    assert!(reboot.contains("\"../bin/busybox\""), "{reboot}");
    let busybox = debugfs(&info.rootfs, "stat /bin/busybox");
    assert!(busybox.contains("Type: regular") && busybox.contains("Mode:  0755"));
}

#[test]
fn minimal_image_carries_the_agent_it_was_given() {
    let data = shared();
    let Some(agent) = std::env::var_os("HEARTH_AGENT") else {
        println!("skipped: no static agent to put in the image");
        return;
    };
    let info = ensure_image(&data, ImageName::Minimal, false, with_agent(), &mut log).unwrap();
    let stat = debugfs(&info.rootfs, "stat /bin/hearth-agent");
    assert!(
        stat.contains("Type: regular") && stat.contains("Mode:  0755"),
        "{stat}"
    );
    let size = std::fs::metadata(&agent).unwrap().len();
    assert!(stat.contains(&format!("Size: {size}")), "{stat}");
    let manifest = data.image("minimal").join("manifest.json");
    let manifest = std::fs::read_to_string(manifest).unwrap();
    let digest = hearth_guestkit::agent::load_static_agent().unwrap().sha256;
    assert!(manifest.contains(&digest), "{manifest}");
    let init = debugfs(&info.rootfs, "stat /sbin/init");
    assert!(
        init.contains("Type: symlink") && init.contains("bin/hearth-agent"),
        "{init}"
    );
}

#[test]
fn forced_build_replaces_the_image_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = private(dir.path());
    let first = ensure_image(&data, ImageName::Minimal, false, with_agent(), &mut log).unwrap();
    assert!(!first.reused);
    let inode = std::fs::metadata(&first.rootfs).unwrap().ino();
    let forced = ensure_image(&data, ImageName::Minimal, true, with_agent(), &mut log).unwrap();
    assert!(!forced.reused);
    assert_eq!(forced.rootfs, first.rootfs);
    assert_ne!(std::fs::metadata(&forced.rootfs).unwrap().ino(), inode);
    let listed = list_images(&data).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "minimal");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["minimal"]);
}

#[test]
fn changed_inputs_cause_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let data = private(dir.path());
    let first = ensure_image(&data, ImageName::Minimal, false, with_agent(), &mut log).unwrap();
    let manifest = dir.path().join("images/minimal/manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let stale = with_recipe_version_zero(&text);
    assert_ne!(stale, text);
    std::fs::write(&manifest, stale).unwrap();
    let rebuilt = ensure_image(&data, ImageName::Minimal, false, with_agent(), &mut log).unwrap();
    assert!(!rebuilt.reused);
    assert_eq!(rebuilt.rootfs, first.rootfs);
}

/// The manifest as an older base (version 0) would have written it.
fn with_recipe_version_zero(manifest: &str) -> String {
    let key = "\"base_version\": ";
    let start = manifest.find(key).expect("the manifest has a version") + key.len();
    let digits = manifest[start..]
        .find(|c: char| !c.is_ascii_digit())
        .expect("the version ends");
    format!("{}0{}", &manifest[..start], &manifest[start + digits..])
}

#[test]
fn check_ext4_names_the_file_it_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.ext4");
    std::fs::write(&empty, b"").unwrap();
    let err = check_ext4(&empty).unwrap_err().to_string();
    assert!(
        err.contains("empty.ext4") && err.contains("is empty"),
        "{err}"
    );
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a filesystem\n".repeat(200)).unwrap();
    let err = check_ext4(&text).unwrap_err().to_string();
    assert!(
        err.contains("notes.txt") && err.contains("not an ext4"),
        "{err}"
    );
    let missing = dir.path().join("missing.ext4");
    let err = check_ext4(&missing).unwrap_err().to_string();
    assert!(err.contains("missing.ext4"), "{err}");
}

#[test]
fn unknown_and_unbuilt_images_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = private(dir.path());
    let err = find_image(&data, "Alpine/..").unwrap_err().to_string();
    assert!(err.contains("not valid"), "{err}");
    let err = find_image(&data, "alpine").unwrap_err().to_string();
    assert!(err.contains("run `hearth image build alpine`"), "{err}");
    let err = find_image(&data, "debian").unwrap_err().to_string();
    assert!(err.contains("run `hearth image build debian`"), "{err}");
}

#[test]
fn debian_image_has_hearth_ready_enabled_and_no_login_or_network_wait() {
    if !is_root() {
        eprintln!("skipped: building the debian image needs root");
        return;
    }
    let data = shared();
    let info = ensure_image(&data, ImageName::Debian, false, with_agent(), &mut log).unwrap();
    check_ext4(&info.rootfs).unwrap();
    let link = "/etc/systemd/system/multi-user.target.wants/hearth-ready.service";
    let wanted = debugfs(&info.rootfs, &format!("stat {link}"));
    assert!(
        wanted.contains("/usr/lib/systemd/system/hearth-ready.service"),
        "{wanted}"
    );
    let unit = debugfs(
        &info.rootfs,
        "cat /usr/lib/systemd/system/hearth-ready.service",
    );
    assert!(unit.contains("After=multi-user.target"), "{unit}");
    let settings = unit.lines().filter(|l| !l.starts_with('#'));
    assert!(settings.clone().all(|l| !l.contains("network-online")));
    let getty = debugfs(
        &info.rootfs,
        "stat /etc/systemd/system/serial-getty@ttyS0.service",
    );
    assert!(getty.contains("\"/dev/null\""), "{getty}");
    let runner = debugfs(&info.rootfs, "cat /usr/lib/hearth/run-command");
    assert_eq!(runner, RUN_COMMAND_SCRIPT);
    let fstab = debugfs(&info.rootfs, "cat /etc/fstab");
    assert!(!fstab.contains("UNCONFIGURED"), "{fstab}");
    let su = debugfs(&info.rootfs, "stat /usr/bin/su");
    assert!(
        su.contains("Mode:  04755") && su.contains("User:     0"),
        "{su}"
    );
    if std::env::var_os("HEARTH_AGENT").is_some() {
        let link = "/etc/systemd/system/sysinit.target.wants/hearth-agent.service";
        let wanted = debugfs(&info.rootfs, &format!("stat {link}"));
        assert!(
            wanted.contains("/usr/lib/systemd/system/hearth-agent.service"),
            "{wanted}"
        );
        let unit = debugfs(
            &info.rootfs,
            "cat /usr/lib/systemd/system/hearth-agent.service",
        );
        let settings: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(settings.contains(&"DefaultDependencies=no"), "{unit}");
        assert!(settings.iter().all(|l| !l.contains("network")), "{unit}");
        let agent = debugfs(&info.rootfs, "stat /usr/local/bin/hearth-agent");
        assert!(agent.contains("Mode:  0755"), "{agent}");
    }
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn layers_are_independent_sparse_ext4_files() {
    let data = shared();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.ext4"), dir.path().join("b.ext4"));
    create_layer(&data, &a).unwrap();
    create_layer(&data, &b).unwrap();
    for layer in [&a, &b] {
        check_ext4(layer).unwrap();
        assert_eq!(ext4_label(layer).unwrap(), LAYER_LABEL);
        assert_eq!(std::fs::metadata(layer).unwrap().len(), DEFAULT_LAYER_SIZE);
        assert!(allocated(layer) < 8 << 20, "{} bytes", allocated(layer));
    }
    let before = std::fs::read(&b).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&a)
        .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, b"scribble", 4096))
        .unwrap();
    assert_eq!(std::fs::read(&b).unwrap(), before, "writing a changed b");
    let err = create_layer(&data, &a).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn layer_template_is_built_once_even_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    let layers: Vec<PathBuf> = (0..4)
        .map(|i| dir.path().join(format!("layer-{i}.ext4")))
        .collect();
    std::thread::scope(|s| {
        for layer in &layers {
            let data = &data;
            s.spawn(move || create_layer(data, layer).unwrap());
        }
    });
    let template = ensure_layer_template(&data, DEFAULT_LAYER_SIZE).unwrap();
    let (ino, built) = (
        std::fs::metadata(&template).unwrap().ino(),
        mtime(&template),
    );
    let another = dir.path().join("another.ext4");
    let started = Instant::now();
    create_layer(&data, &another).unwrap();
    let took = started.elapsed();
    assert_eq!(std::fs::metadata(&template).unwrap().ino(), ino);
    assert_eq!(mtime(&template), built);
    assert!(took < Duration::from_millis(500), "{took:?}");
    let cache: Vec<_> = std::fs::read_dir(data.cache()).unwrap().collect();
    assert_eq!(cache.len(), 1, "only the template is left in the cache");
}

/// What the runner printed, and whether it tried to reboot.
#[derive(Debug)]
struct Ran {
    stdout: String,
    stderr: String,
    rebooted: bool,
}

/// Runs the guest's command runner on this host, safely: in its own mount
/// and PID namespaces, with a fake /proc/cmdline bound over the real one and
/// a PATH holding busybox applets and a fake `reboot` only.
///
/// The PID namespace is what makes this safe: busybox sh runs its own
/// `reboot` applet whatever PATH says, and reboot(2) in a child PID
/// namespace only ends that namespace. dash finds the fake on PATH.
fn run_runner(shell: &[&str], cmdline: &str) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for applet in ["cat", "base64", "sync", "sh", "printf", "echo"] {
        std::os::unix::fs::symlink("/bin/busybox", bin.join(applet)).unwrap();
    }
    let reboot = bin.join("reboot");
    std::fs::write(&reboot, "#!/bin/busybox sh\necho fake-reboot \"$@\"\n").unwrap();
    std::fs::set_permissions(&reboot, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fake_cmdline = dir.path().join("cmdline");
    std::fs::write(&fake_cmdline, format!("{cmdline}\n")).unwrap();
    let runner = dir.path().join("run-command");
    std::fs::write(&runner, RUN_COMMAND_SCRIPT).unwrap();
    let out = Command::new("/usr/bin/unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child", "--"])
        .args(["/bin/busybox", "sh", "-c"])
        .arg("/bin/mount --bind \"$1\" /proc/cmdline && shift && exec \"$@\"")
        .args(["sandbox".as_ref(), fake_cmdline.as_os_str()])
        .args(shell)
        .arg(&runner)
        .env_clear()
        .env("PATH", &bin)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match stdout.strip_suffix("fake-reboot -f\n") {
        Some(before) => Ran {
            stdout: before.to_owned(),
            stderr,
            rebooted: true,
        },
        None => Ran {
            stdout,
            stderr,
            rebooted: !out.status.success(),
        },
    }
}

fn argv(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn runner_runs_the_exact_command_from_cmdline_arg_and_powers_off() {
    if !is_root() {
        eprintln!("skipped: the runner sandbox needs root for its namespaces");
        return;
    }
    let command = argv(&["printf", "[%s]", "a b", "*", "x\n", "$HOME", "a,b"]);
    let param = cmdline_arg(&command).unwrap().unwrap();
    let cmdline = format!("console=ttyS0 reboot=k panic=1 {param}");
    for shell in [&["/bin/busybox", "sh"][..], &["/bin/dash"]] {
        let ran = run_runner(shell, &cmdline);
        assert_eq!(
            ran.stdout,
            "hearth: ready\n[a b][*][x\n][$HOME][a,b]\nhearth: exit status 0\n\
             hearth: power off\n",
            "under {shell:?}"
        );
        assert!(ran.rebooted, "under {shell:?}");
    }
}

#[test]
fn runner_reports_the_commands_exit_status() {
    if !is_root() {
        eprintln!("skipped: the runner sandbox needs root for its namespaces");
        return;
    }
    let cases: [(&[&str], &[&str], &str); 3] = [
        (&["sh", "-c", "exit 7"], &["/bin/busybox", "sh"], "7"),
        (&["exit", "3"], &["/bin/dash"], "3"),
        (&["no-such-command"], &["/bin/busybox", "sh"], "127"),
    ];
    for (command, shell, status) in cases {
        let param = cmdline_arg(&argv(command)).unwrap().unwrap();
        let ran = run_runner(shell, &format!("quiet {param}"));
        let tail = format!("\nhearth: exit status {status}\nhearth: power off\n");
        assert!(ran.stdout.ends_with(&tail), "{command:?}: {ran:?}");
        assert!(ran.rebooted, "{command:?}: {ran:?}");
    }
}

#[test]
fn runner_without_a_command_only_reports_ready() {
    if !is_root() {
        eprintln!("skipped: the runner sandbox needs root for its namespaces");
        return;
    }
    let ran = run_runner(&["/bin/busybox", "sh"], "console=ttyS0 reboot=k panic=1");
    assert_eq!(ran.stdout, "hearth: ready\n");
    assert!(!ran.rebooted && ran.stderr.is_empty(), "{ran:?}");
}

#[test]
fn an_image_with_an_unreadable_manifest_does_not_hide_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = private(dir.path());
    ensure_image(&data, ImageName::Minimal, false, with_agent(), &mut log).unwrap();
    let old = data.image("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(
        old.join("manifest.json"),
        r#"{"name": "old", "inputs": {"recipe": "gone"}}"#,
    )
    .unwrap();
    std::fs::write(old.join("rootfs.ext4"), b"").unwrap();
    let names: Vec<String> = hearth_guestkit::image::list_images(&data)
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["minimal"]);
}
