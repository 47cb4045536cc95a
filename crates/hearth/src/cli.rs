//! The command-line grammar. Only parsing lives here; `commands/` runs it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hearth_types::guest::EnvVar;
use hearth_types::{SnapshotName, TenantId, VmId};

#[derive(Debug, Parser)]
#[command(name = "hearth", version, about = "Boot and manage Linux microVMs")]
pub struct Cli {
    /// Data directory (kernels, images, VM logs). Default: $HEARTH_DATA_DIR,
    /// else /var/lib/hearth as root, else ~/.local/share/hearth.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, inspect and extract guest kernels.
    #[command(subcommand)]
    Kernel(KernelCommand),
    /// Build, list, show and remove root filesystem images (from recipes).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Run and manage VMs.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Run the controller and its HTTP API until SIGTERM or SIGINT.
    Serve(Box<ServeArgs>),
    /// Create (directly in the store; no server needed), list and revoke
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Login sessions: a user logs in to an AI CLI tool in a browser VM
    /// (through its viewer link), and the credential is sealed in the vault.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Each user's CLI VM: their AI tools logged in with the credentials
    /// their login sessions captured, kept live.
    #[command(subcommand)]
    Cli(CliCommand),
    /// The key ring that seals users' credentials: status, rotate, retire
    /// (directly on the data directory; never shows a key).
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Check that this host can boot VMs, and say how to fix what is missing.
    Doctor,
    /// Warm pools: VMs of an image booted ahead of demand and handed out to
    /// the creates that fit (through `hearth serve`, admin token).
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Snapshots of running VMs and templates of images, through `hearth
    /// serve`; restore one with `hearth vm create --from-snapshot NAME`.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Tenants' settings through `hearth serve` (admin token): their
    /// network policy.
    #[command(subcommand)]
    Tenant(TenantCommand),
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a running VM (`--vm`), which runs on, or boot an image,
    /// snapshot it before any configuration reaches it and stop it
    /// (`--image`: a template).
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// The snapshot's name (lowercase letters, digits, `-`).
        name: SnapshotName,
        #[arg(long, conflicts_with = "image", required_unless_present = "image")]
        vm: Option<VmId>,
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List snapshots.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show one snapshot and its manifest (what a restore must match).
    Show {
        #[command(flatten)]
        api: ApiArgs,
        name: SnapshotName,
        #[arg(long)]
        json: bool,
    },
    /// Remove a snapshot and its files (refused while VMs restored from it
    /// exist).
    Rm {
        #[command(flatten)]
        api: ApiArgs,
        name: SnapshotName,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create or change the pool of IMAGE.
    Set {
        #[command(flatten)]
        api: ApiArgs,
        image: String,
        /// VMs to keep waiting.
        #[arg(long)]
        size: u32,
        /// The most pooled VMs at once, booting included (default: SIZE).
        #[arg(long)]
        max: Option<u32>,
        /// Seconds a waiting VM is kept before it is replaced (default: 3600).
        #[arg(long, value_name = "SECS")]
        ttl: Option<u64>,
        /// Boots per minute the pool may start (default: 6).
        #[arg(long, value_name = "N")]
        refill: Option<u32>,
        /// Restore the pool's VMs from this template snapshot of IMAGE
        /// (`hearth snapshot create --image IMAGE NAME`), services up,
        /// instead of booting each cold.
        #[arg(long, value_name = "SNAPSHOT")]
        template: Option<hearth_types::SnapshotName>,
    },
    /// Every pool: settings, VMs waiting and booting, hand-outs.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// One pool and each of its VMs.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        image: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove the pool of IMAGE; its waiting VMs are destroyed.
    Rm {
        #[command(flatten)]
        api: ApiArgs,
        image: String,
    },
}

/// `--pool IMAGE=SIZE`.
fn parse_pool_arg(s: &str) -> Result<(String, u32), String> {
    let (image, size) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not IMAGE=SIZE (e.g. `--pool browser=2`)"))?;
    let size = size.parse().map_err(|_| {
        format!("{size:?} in {s:?} is not a number of VMs (e.g. `--pool browser=2`)")
    })?;
    if image.is_empty() {
        return Err(format!("{s:?} names no image (e.g. `--pool browser=2`)"));
    }
    Ok((image.to_owned(), size))
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a session for USER with PROVIDER; prints the viewer link to
    /// open (with `--wait`, then waits for the session to end).
    Start {
        #[command(flatten)]
        api: ApiArgs,
        /// Whose login: a name inside the token's tenant.
        #[arg(long)]
        user: String,
        /// `claude`, `codex`, `gemini`, or one the server defines
        /// (`hearth session providers`).
        #[arg(long)]
        provider: String,
        /// Seconds until the session expires (60 to 3600; default: the
        /// server's).
        #[arg(long, value_name = "SECS")]
        ttl: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// One session: state, VM, what the login command printed, and the
    /// events with --events.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        #[arg(long)]
        events: bool,
        #[arg(long)]
        json: bool,
    },
    /// The sessions of the token's tenant, newest first.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a live session: its VM is destroyed.
    Cancel {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
    },
    /// Wait until the session ends; exits 0 when it completed, 1 when it
    /// expired, was cancelled or failed (saying why).
    Wait {
        #[command(flatten)]
        api: ApiArgs,
        id: String,
        /// Give up after this many seconds (exit 3).
        #[arg(long, value_name = "SECS", default_value_t = 3600)]
        timeout: u64,
    },
    /// The providers the server offers.
    Providers {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
}

/// `hearth cli start|stop|show|exec|rm USER`.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Start USER's CLI VM (or show the one running).
    Start {
        #[command(flatten)]
        api: ApiArgs,
        user: String,
        /// The image to boot (default: `cli`).
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Stop USER's CLI VM. Until VMs can be persistent this destroys it;
    /// the next start boots a new one with the current credentials.
    Stop {
        #[command(flatten)]
        api: ApiArgs,
        user: String,
    },
    /// USER's CLI VM: its VM, state and credential versions.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Run a command in USER's CLI VM (as `hearth vm exec` does).
    Exec {
        #[command(flatten)]
        api: ApiArgs,
        user: String,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: Option<u64>,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(short = 'i', long)]
        interactive: bool,
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Destroy USER's CLI VM (its logs archived first).
    Rm {
        #[command(flatten)]
        api: ApiArgs,
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Download Debian's cloud kernel through apt and store it with its modules.
    Fetch,
    /// Say what a kernel file is: ELF or bzImage, payload compression, version.
    Inspect { path: PathBuf },
    /// Store a kernel of your own, with its modules or with none (its
    /// drivers built in), so `vm run --kernel RELEASE` boots it.
    Import {
        path: PathBuf,
        /// The directory `make modules_install INSTALL_MOD_PATH=DIR` wrote,
        /// or its `lib/modules/<release>`.
        #[arg(long, value_name = "DIR", required_unless_present = "no_modules")]
        modules: Option<PathBuf>,
        /// The kernel builds in virtio, vsock and overlayfs: no modules.
        #[arg(long, conflicts_with = "modules")]
        no_modules: bool,
    },
    /// Write the ELF vmlinux contained in a bzImage.
    Extract {
        bzimage: PathBuf,
        #[arg(short, long, value_name = "VMLINUX")]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build (or reuse, when its inputs are unchanged) an image from a
    /// built-in recipe (minimal, debian, cli) or a recipe file.
    Build {
        /// A built-in recipe's name, or a recipe file's path (it has a `/`
        /// or ends in `.toml`); see docs/images.md.
        #[arg(value_name = "NAME|FILE")]
        recipe: String,
        /// Rebuild even when the inputs are unchanged.
        #[arg(long)]
        force: bool,
        /// Build it without the guest agent (no exec, cp, services or agent
        /// readiness in its VMs). Without this, a missing or dynamically
        /// linked agent is an error.
        #[arg(long)]
        no_agent: bool,
    },
    /// List built images.
    #[command(alias = "ls")]
    List,
    /// Show a built image: its recipe, inputs, size and resolved packages.
    Show {
        name: String,
        /// Every installed Debian package, not only the recipe's.
        #[arg(long)]
        all_packages: bool,
    },
    /// Remove a built image (refused while it is being built; VMs running
    /// from it keep their open copy).
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Boot a VM in the foreground, streaming its console.
    Run(RunArgs),
    /// Create a VM through `hearth serve`; prints its id.
    Create(CreateArgs),
    /// List VMs.
    #[command(alias = "ls")]
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Show one VM: state, failure, deadlines.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
        #[arg(long)]
        json: bool,
    },
    /// The state transitions and notes of a VM, oldest first.
    Events {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
        #[arg(long)]
        json: bool,
    },
    /// The guest's serial console, live or archived.
    Console {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
        /// How many of the last lines to print.
        #[arg(long, default_value_t = 100)]
        lines: usize,
        /// Keep printing lines as the guest writes them, until it stops.
        #[arg(short, long)]
        follow: bool,
    },
    /// The hypervisor's own log (QEMU's or Firecracker's output), or with
    /// `--service NAME` that service's output as the agent captured it.
    Logs {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
        #[arg(long, default_value_t = 100)]
        lines: usize,
        /// A service run by the guest agent: its output lines, with host
        /// timestamps and streams (kept after the VM is destroyed).
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
    },
    /// The guest agent's health: connected, last heartbeat, each service's
    /// state, restarts and last exit.
    Health {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
        #[arg(long)]
        json: bool,
    },
    /// The VM's NIC: its guest address and the packets refused for their
    /// destination (its policy's denials, the networks always refused).
    Network {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
        #[arg(long)]
        json: bool,
    },
    /// The boot report the guest agent sent (kernel, failed units, ports,
    /// interfaces, memory, disks).
    Report {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
        #[arg(long)]
        json: bool,
    },
    /// Copy a file into or out of a ready VM: `hearth vm cp LOCAL ID:/path`
    /// or `hearth vm cp ID:/path LOCAL`; the SHA-256 is checked end to end.
    Cp {
        #[command(flatten)]
        api: ApiArgs,
        /// A local path, or ID:/absolute/path in the VM.
        from: String,
        /// A local path, or ID:/absolute/path in the VM.
        to: String,
    },
    /// Why a VM failed: each finding's cause, the lines that show it, the fix.
    Why {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
        /// Print the diagnosis as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a ready VM through its guest agent; exits with the
    /// command's status (128+N when signal N killed it, 127 when it could
    /// not be started, 2 when the request failed).
    Exec(ExecArgs),
    /// Forward local TCP ports to ports on a VM's loopback, through its
    /// guest agent (no guest network needed), until interrupted.
    #[command(name = "port-forward")]
    PortForward {
        #[command(flatten)]
        api: ApiArgs,
        /// The local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        address: std::net::IpAddr,
        id: VmId,
        /// GUEST, LOCAL:GUEST, or :GUEST for a local port the system picks.
        #[arg(required = true, num_args = 1.., value_name = "[LOCAL:]GUEST")]
        ports: Vec<crate::commands::PortPair>,
    },
    /// Make a viewer link: a URL that opens the VM's screen in a browser
    /// (watch and click) for whoever holds it, until it expires or is
    /// revoked. Also lists and revokes a VM's links.
    View {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
        /// How long the link works, in seconds (1 to 86400; default 900).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400), conflicts_with_all = ["list", "revoke"])]
        ttl: Option<u64>,
        /// List the VM's links (never their keys) instead.
        #[arg(long, conflicts_with = "revoke")]
        list: bool,
        /// Revoke the link with this id (`hvl_...`) instead.
        #[arg(long, value_name = "LINK")]
        revoke: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Keep a VM (never clean it up) until it is released.
    Hold {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
    },
    /// Let a held VM be cleaned up again after its grace period.
    Release {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
    },
    /// Stop a running VM. A persistent one keeps its disk and stays
    /// stopped until `hearth vm start`; another is cleaned up after its
    /// grace period.
    Stop {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
    },
    /// Boot a stopped or failed persistent VM again from its disk.
    Start {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
    },
    /// Stop a VM and destroy it (its logs are archived first; a persistent
    /// VM's disk is removed with it, and only by this).
    Rm {
        #[command(flatten)]
        api: ApiArgs,
        id: VmId,
    },
}

/// `hearth vm exec`: a command in a ready VM, its output streamed back.
/// Without `-i` its stdin is empty and one HTTP request carries it; with
/// `-i` a WebSocket session also carries our stdin, the terminal's size
/// and signals, so a shell can be typed into as over SSH.
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    pub id: VmId,
    /// Seconds the command may run before it is killed (1 to 3600; default
    /// 60, or 3600 with -i).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: Option<u64>,
    /// Run it on a pseudo-terminal in the guest (stdout and stderr merged);
    /// with -i and a local terminal, ours is put in raw mode meanwhile and
    /// its size follows ours.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Forward our stdin to the command (until end of file) and SIGINT,
    /// SIGTERM and SIGHUP to its process group.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// An environment variable for the command only (repeatable).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE", value_parser = EnvVarParser)]
    pub env: Vec<EnvVar>,
    /// The program and its arguments, after `--`; run directly, not
    /// through a shell (use `sh -c '...'` for one).
    #[arg(last = true, required = true, num_args = 1..)]
    pub command: Vec<String>,
}

/// `NAME=VALUE` for `--env`, checked as the server would, so a typo is a
/// usage error before anything is sent. Its own parser so that the error
/// names the variable but never shows the value (clap's would).
#[derive(Clone)]
struct EnvVarParser;

impl clap::builder::TypedValueParser for EnvVarParser {
    type Value = EnvVar;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<EnvVar, clap::Error> {
        let invalid = |why: String| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, why + "\n").with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("--env: not UTF-8".into()))?;
        let (name, value) = text.split_once('=').ok_or_else(|| {
            invalid("--env takes NAME=VALUE, and this one has no '=': e.g. -e LANG=C.UTF-8 (NAME= for an empty value)".into())
        })?;
        let var = EnvVar {
            name: name.to_owned(),
            value: value.to_owned(),
        };
        var.check()
            .map_err(|why| invalid(format!("--env: {why}")))?;
        Ok(var)
    }
}

/// Where `hearth serve` is and who is asking.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of `hearth serve`.
    #[arg(long, env = "HEARTH_URL", default_value = "http://127.0.0.1:7070")]
    pub url: String,
    /// API token (from `hearth token create`).
    #[arg(long, env = "HEARTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Image name, as built with `hearth image build`.
    #[arg(long, default_value = "minimal")]
    pub image: String,
    #[arg(long, value_enum, default_value_t = Backend::Qemu)]
    pub backend: Backend,
    /// Default: the image recipe's `vm.vcpus`, else 1 (the server decides).
    #[arg(long)]
    pub vcpus: Option<u8>,
    /// Guest memory in MiB. Default: the recipe's `vm.memory_mib`, else 256.
    #[arg(long)]
    pub memory: Option<u32>,
    /// Seconds the guest has to become ready (default: the server's).
    #[arg(long, value_name = "SECS")]
    pub readiness_timeout: Option<u64>,
    /// A JSON file with the guest agent's configuration (hostname, env,
    /// files, services); see docs/api.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Give the VM a NIC: `nat`, its own address behind the host's (see
    /// docs/networking.md); `none`: no NIC. Without it the VM gets the
    /// server's default (`hearth serve --default-network`; none unless set).
    #[arg(long, value_enum)]
    pub network: Option<NetworkArg>,
    #[command(flatten)]
    pub net: NetPolicyArgs,
    /// Keep the VM across boots: its own writable disk survives `hearth vm
    /// stop` and `start`, host reboots and server restarts; only `hearth vm
    /// rm` removes it.
    #[arg(long)]
    pub persistent: bool,
    /// The persistent disk's size in MiB (64 to 262144; default 1024).
    #[arg(long, value_name = "MIB", requires = "persistent")]
    pub disk_mib: Option<u32>,
    /// What happens when the persistent VM's run ends without a stop being
    /// asked for (default: never).
    #[arg(long, value_enum, requires = "persistent")]
    pub restart: Option<RestartArg>,
    /// Stop the persistent VM when no exec, file copy, port stream or
    /// viewer used it for this many seconds.
    #[arg(long, value_name = "SECS", requires = "persistent")]
    pub idle_stop: Option<u64>,
    /// Restore this snapshot instead of booting: the image, size and
    /// kernel are the snapshot's (others given are refused, naming the
    /// difference).
    #[arg(long, value_name = "NAME")]
    pub from_snapshot: Option<SnapshotName>,
    /// Wait until the VM is ready (or has stopped), and say how it went.
    #[arg(long, value_enum)]
    pub wait: Option<WaitFor>,
    /// How long `--wait` waits before giving up (the VM is left as it is).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// Print the VM as JSON instead of its id.
    #[arg(long)]
    pub json: bool,
    /// What the guest runs; without one it stays up until removed.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `--network-pool`: `NETWORK/PREFIX_LEN`.
fn parse_pool(text: &str) -> Result<hearth_net::TransitPool, String> {
    let bad = || format!("{text:?} is not a network: give it as 10.231.0.0/16");
    let (network, len) = text.split_once('/').ok_or_else(bad)?;
    let network = network.parse().map_err(|_| bad())?;
    let len = len.parse().map_err(|_| bad())?;
    let pool = hearth_net::TransitPool::new(network, len).map_err(|e| e.to_string())?;
    let (run_net, run_len) = hearth_control::foreground::RUN_POOL;
    if pool.overlaps(run_net, run_len) {
        return Err(format!(
            "{text} overlaps {run_net}/{run_len}, the pool of `hearth vm run --network nat`: \
             give another network, such as 10.233.0.0/16"
        ));
    }
    Ok(pool)
}

/// `--restart`: a persistent VM's restart policy.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum RestartArg {
    /// Never started again by the server: a failed VM stays failed.
    Never,
    /// Started again after a failure, with backoff.
    OnFailure,
    /// Also after the guest powered off and after the host went down.
    Always,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum NetworkArg {
    /// Its own namespace, source NAT to the outside.
    Nat,
    /// No NIC.
    None,
}

/// A NIC's policy as flags: a VM's (`hearth vm create`, with a NIC) or a
/// tenant's (`hearth tenant network set`). The server checks each value.
#[derive(Debug, Args, Default)]
pub struct NetPolicyArgs {
    /// The only IPv4 networks the guest may reach (`203.0.113.0/24`, or an
    /// address); repeat for more. On a tenant, one within a private network
    /// (`10.20.0.0/16`) lets its VMs reach it.
    #[arg(long = "net-allow", value_name = "CIDR")]
    pub net_allow: Vec<String>,
    /// IPv4 networks the guest may not reach, refused and counted (`hearth
    /// vm network ID`); repeat for more.
    #[arg(long = "net-deny", value_name = "CIDR")]
    pub net_deny: Vec<String>,
    /// Each direction's rate limit, kbit/s.
    #[arg(long = "net-bandwidth", value_name = "KBIT")]
    pub net_bandwidth: Option<u32>,
    /// A name (or `*.example.com`) the guest's web traffic may reach
    /// through the host's proxy; the resolver answers only these, and
    /// nothing else leaves but for `--net-allow` networks. Repeat for more.
    #[arg(long = "net-allow-domain", value_name = "DOMAIN")]
    pub net_allow_domains: Vec<String>,
}

impl NetPolicyArgs {
    pub fn policy(&self) -> hearth_types::api::NetworkPolicy {
        hearth_types::api::NetworkPolicy {
            allow: self.net_allow.clone(),
            deny: self.net_deny.clone(),
            bandwidth_kbit: self.net_bandwidth,
            allow_domains: self.net_allow_domains.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// A tenant's network policy (admin token): what every NIC of its VMs
    /// may reach, merged into each VM's own policy at its create.
    #[command(subcommand)]
    Network(TenantNetworkCommand),
}

#[derive(Debug, Subcommand)]
pub enum TenantNetworkCommand {
    /// Replace TENANT's network policy: VMs created from now on get it, running ones are narrowed to it.
    Set {
        #[command(flatten)]
        api: ApiArgs,
        tenant: TenantId,
        #[command(flatten)]
        net: NetPolicyArgs,
    },
    /// TENANT's network policy.
    Show {
        #[command(flatten)]
        api: ApiArgs,
        tenant: TenantId,
        #[arg(long)]
        json: bool,
    },
    /// Remove TENANT's network policy.
    Rm {
        #[command(flatten)]
        api: ApiArgs,
        tenant: TenantId,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum WaitFor {
    /// The guest reported readiness.
    Ready,
    /// The guest powered off (its command ended).
    Stopped,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP API.
    #[arg(long, default_value_t = hearth_server::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Seconds a stopped or failed VM is kept for inspection before cleanup.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub grace: u64,
    /// Seconds a VM has to become ready unless its request says otherwise.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub readiness_timeout: u64,
    /// Seconds before files and processes no VM accounts for are removed.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub orphan_grace: u64,
    /// Archived logs older than this many seconds are pruned (default: 7 days).
    #[arg(long, value_name = "SECS")]
    pub retention_age: Option<u64>,
    /// Archived logs beyond this many bytes in total are pruned, oldest first
    /// (default: 1 GiB).
    #[arg(long, value_name = "N")]
    pub retention_bytes: Option<u64>,
    /// Milliseconds between reconciler runs.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub tick_ms: u64,
    /// Requests one token may make per window (default: 1000 per 900 s).
    #[arg(long, value_name = "N", requires = "rate_window")]
    pub rate_limit: Option<u32>,
    /// The rate limit's window in seconds.
    #[arg(long, value_name = "SECS", requires = "rate_limit")]
    pub rate_window: Option<u64>,
    /// QEMU acceleration; default: detected (KVM where it can run a guest).
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
    /// Firecracker binary (default: $HEARTH_FIRECRACKER, else `firecracker` on PATH).
    #[arg(long)]
    pub firecracker: Option<PathBuf>,
    /// The largest file `hearth vm cp` moves either way (default: 64 MiB).
    #[arg(long, value_name = "N")]
    pub max_file_bytes: Option<u64>,
    /// The prefix of VM networks' namespace and link names
    /// (`PREFIX-sN`): 1 to 8 lowercase letters and digits; two servers on
    /// one host need different ones.
    #[arg(long, value_name = "PREFIX", default_value = "hearth")]
    pub network_prefix: hearth_net::Prefix,
    /// Make VM networks hang off this named network namespace
    /// (`/run/netns/NAME`) instead of the server's own, which then sees
    /// none of their traffic.
    #[arg(long, value_name = "NAME")]
    pub network_namespace: Option<String>,
    /// The transit pool VM networks take a /30 each from: an aligned IPv4
    /// network between /14 and /28 that no host route overlaps (`hearth
    /// doctor` checks the default).
    #[arg(long, value_name = "CIDR", default_value = "10.231.0.0/16", value_parser = parse_pool)]
    pub network_pool: hearth_net::TransitPool,
    /// The NIC a VM created without `network` gets: `nat`, or `none` (the
    /// default); a create says `"network": "none"` (`--network none`) to
    /// have none whatever this says. Restores from snapshots get none;
    /// with `nat`, pools without a template boot their VMs with a closed
    /// NIC, opened to the create's policy at the hand-out.
    #[arg(long, value_enum, value_name = "MODE", default_value = "none")]
    pub default_network: NetworkArg,
    /// Where noVNC is, for the viewer page (default: where
    /// scripts/setup-host installs it, then Debian's novnc package).
    #[arg(long, value_name = "DIR")]
    pub novnc_dir: Option<PathBuf>,
    /// The URL people reach this server at, for viewer links (default:
    /// the address each request came to).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Keep SIZE VMs of IMAGE booted and waiting for the creates that fit
    /// (repeatable; `hearth pool set` changes it later).
    #[arg(long = "pool", value_name = "IMAGE=SIZE", value_parser = parse_pool_arg)]
    pub pools: Vec<(String, u32)>,
    /// The most pooled VMs booting at once, across pools (default: 1).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub pool_boots: u64,
    #[command(flatten)]
    pub keys: KeyFileArgs,
    #[command(flatten)]
    pub sessions: SessionServeArgs,
    /// How stderr's log lines are written: `text` for people, `json` (one
    /// object per line: timestamp, level, target, message and fields) for
    /// log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `hearth serve --log-format`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token and print it once on stdout.
    Create {
        /// The tenant whose VMs the token may see and create.
        #[arg(long, default_value = "default")]
        tenant: TenantId,
        /// May see and manage every tenant's VMs, and the tokens.
        #[arg(long)]
        admin: bool,
        /// Refuse the token this many seconds from now (default: never).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_EXPIRES_IN))]
        expires_in: Option<u64>,
    },
    /// List the tokens (id, tenant, admin, created, expiry, last use; never
    /// a secret), through `hearth serve` with an admin token.
    List {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (`hth_` and 8 hex, as `list` shows it): its
    /// next request is refused. Through `hearth serve` with an admin token.
    Revoke {
        #[command(flatten)]
        api: ApiArgs,
        /// The token's id, never the whole token.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// The key versions, which one is active, and how many sealed
    /// credentials each wraps.
    Status {
        #[command(flatten)]
        keys: KeyFileArgs,
        #[arg(long)]
        json: bool,
    },
    /// Make a new key version, make it active and rewrap every
    /// credential's data key under it (the credentials themselves are not
    /// re-encrypted).
    Rotate {
        #[command(flatten)]
        keys: KeyFileArgs,
    },
    /// Destroy an old key version; refused while any credential is still
    /// wrapped under it (run `rotate` first) and for the active one.
    Retire {
        #[command(flatten)]
        keys: KeyFileArgs,
        /// The version, as `status` lists it.
        version: u32,
    },
}

#[derive(Debug, Args)]
pub struct KeyFileArgs {
    /// The vault's key file, when the operator keeps it outside the data
    /// directory (default: DATA/vault/keys.json, made at first use).
    #[arg(long, value_name = "PATH", env = "HEARTH_VAULT_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

/// `hearth serve`'s settings of login sessions and their egress proxy.
#[derive(Debug, Args, Clone, Default)]
pub struct SessionServeArgs {
    /// More provider entries (`*.toml`, the form of providers/*.toml; one
    /// with a built-in's name replaces it).
    #[arg(long, value_name = "DIR")]
    pub providers: Option<PathBuf>,
    /// How long a session lives unless it asks otherwise (default 600).
    #[arg(long, value_name = "SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(60..=3600))]
    pub session_ttl: u64,
    /// How long a session's browser VM may take to be ready (default 300).
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub session_readiness_timeout: u64,
    /// A domain every session may reach besides its provider's (`name` or
    /// `*.name`); repeat for more.
    #[arg(long = "egress-allow", value_name = "DOMAIN")]
    pub egress_allow: Vec<String>,
    /// A port sessions may reach besides 80 and 443; repeat for more.
    #[arg(long = "egress-port", value_name = "PORT")]
    pub egress_ports: Vec<u16>,
    /// A network the egress proxy would refuse (private, loopback) that it
    /// may reach after all, as CIDR; repeat for more.
    #[arg(long = "egress-allow-network", value_name = "CIDR")]
    pub egress_networks: Vec<String>,
    /// A name the egress proxy resolves to a fixed address (`NAME=IP`),
    /// before asking the host's resolver; repeat for more.
    #[arg(long = "egress-host", value_name = "NAME=IP")]
    pub egress_hosts: Vec<String>,
    /// An HTTP proxy all egress goes through (`HOST:PORT`); its
    /// credentials, if any, come from HEARTH_EGRESS_UPSTREAM_AUTH
    /// (`user:password`), never from the command line.
    #[arg(long = "egress-upstream", value_name = "HOST:PORT")]
    pub egress_upstream: Option<String>,
}

/// The longest `--expires-in`: 100 years, far past any need and far from
/// overflowing a timestamp.
pub const MAX_EXPIRES_IN: u64 = 100 * 365 * 24 * 3600;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value_t = Backend::Qemu)]
    pub backend: Backend,
    /// Image name (built with `hearth image build`), or a path to an ext4 file.
    #[arg(long, default_value = "minimal")]
    pub image: String,
    /// Kernel file (ELF or bzImage), or the release of one `hearth kernel
    /// import` stored. Default: the one `hearth kernel fetch` stored.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// The kernel's modules for hearth's initramfs: the directory `make
    /// modules_install INSTALL_MOD_PATH=DIR` wrote, or its
    /// `lib/modules/<release>`. Default: those stored for its release.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["no_modules", "no_initramfs"])]
    pub modules: Option<PathBuf>,
    /// The kernel builds in the drivers a guest needs (virtio, vsock,
    /// overlayfs): hearth's initramfs loads no module.
    #[arg(long, conflicts_with = "no_initramfs")]
    pub no_modules: bool,
    /// Boot the kernel without hearth's initramfs: it mounts the image
    /// itself (`root=/dev/vda ro`, with virtio-blk and ext4 built in) or
    /// needs no root. Any kernel then works, without modules or a version
    /// string; the guest completes when the hypervisor exits cleanly.
    #[arg(long)]
    pub no_initramfs: bool,
    /// Default: the image recipe's `vm.vcpus`, else 1.
    #[arg(long)]
    pub vcpus: Option<u8>,
    /// Guest memory in MiB. Default: the recipe's `vm.memory_mib`, else 256.
    #[arg(long)]
    pub memory: Option<u32>,
    /// Give up (and stop the VM) after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// QEMU acceleration; default: detected (KVM where it can run a guest).
    #[arg(long, value_enum)]
    pub accel: Option<AccelArg>,
    /// Firecracker binary (default: $HEARTH_FIRECRACKER, else `firecracker` on PATH).
    #[arg(long)]
    pub firecracker: Option<PathBuf>,
    /// Give the VM a NIC: `nat`, its own address behind the host's, made
    /// and removed by this run (root; see docs/networking.md). Default:
    /// none.
    #[arg(long, value_enum)]
    pub network: Option<NetworkArg>,
    #[command(flatten)]
    pub net: NetPolicyArgs,
    /// Do not copy the console to stdout.
    #[arg(long)]
    pub quiet: bool,
    /// What the guest runs before it powers off.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Backend {
    Qemu,
    Firecracker,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AccelArg {
    Kvm,
    Tcg,
}
