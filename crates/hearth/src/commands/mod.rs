//! One module per subcommand.

mod cli_vm;
mod client;
mod doctor;
mod image;
mod kernel;
mod pool;
mod serve;
mod serve_sessions;
mod session;
mod snapshot;
mod tenant;
mod token;
mod vault;
mod vm_agent;
mod vm_api;
mod vm_exec;
mod vm_port_forward;
mod vm_run;
mod vm_view;

use std::process::ExitCode;

use hearth_guestkit::DataDir;
pub use vm_port_forward::PortPair;

use crate::cli::{
    Cli, Command, ImageCommand, KernelCommand, PoolCommand, SessionCommand, SnapshotCommand,
    TokenCommand, VaultCommand, VmCommand,
};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Absolute: hypervisors' command lines name paths under it, and the
    // orphan reconciler matches them.
    let data = cli
        .data_dir
        .map(|d| DataDir::new(std::path::absolute(&d).unwrap_or(d)))
        .unwrap_or_else(DataDir::from_env);
    match cli.command {
        Command::Kernel(KernelCommand::Fetch) => kernel::fetch(&data),
        Command::Kernel(KernelCommand::Inspect { path }) => kernel::inspect(&path),
        Command::Kernel(KernelCommand::Import {
            path,
            modules,
            no_modules: _,
        }) => kernel::import(&data, &path, modules),
        Command::Kernel(KernelCommand::Extract { bzimage, output }) => {
            kernel::extract(&bzimage, &output)
        }
        Command::Image(ImageCommand::Build {
            recipe,
            force,
            no_agent,
        }) => image::build(&data, &recipe, force, no_agent),
        Command::Image(ImageCommand::List) => image::list(&data),
        Command::Image(ImageCommand::Show { name, all_packages }) => {
            image::show(&data, &name, all_packages)
        }
        Command::Image(ImageCommand::Rm { name }) => image::rm(&data, &name),
        Command::Vm(vm) => run_vm(&data, vm),
        Command::Doctor => doctor::run(&data),
        Command::Serve(args) => serve::run(&data, *args),
        Command::Token(TokenCommand::Create {
            tenant,
            admin,
            expires_in,
        }) => token::create(&data, tenant, admin, expires_in),
        Command::Token(TokenCommand::List { api, json }) => token::list(&api, json),
        Command::Token(TokenCommand::Revoke { api, id }) => token::revoke(&api, &id),
        Command::Session(command) => run_session(command),
        Command::Pool(command) => run_pool(command),
        Command::Snapshot(command) => run_snapshot(command),
        Command::Tenant(command) => tenant::run(command),
        Command::Cli(command) => cli_vm::run(command),
        Command::Vault(VaultCommand::Status { keys, json }) => vault::status(&data, keys, json),
        Command::Vault(VaultCommand::Rotate { keys }) => vault::rotate(&data, keys),
        Command::Vault(VaultCommand::Retire { keys, version }) => {
            vault::retire(&data, keys, version)
        }
    }
}

fn run_pool(command: PoolCommand) -> anyhow::Result<ExitCode> {
    match command {
        PoolCommand::Set {
            api,
            image,
            size,
            max,
            ttl,
            refill,
            template,
        } => {
            let spec = hearth_types::pool::PoolSpec {
                size,
                max,
                ttl_secs: ttl,
                refill_per_min: refill,
                template,
            };
            pool::set(&api, &image, &spec)
        }
        PoolCommand::List { api, json } => pool::list(&api, json),
        PoolCommand::Show { api, image, json } => pool::show(&api, &image, json),
        PoolCommand::Rm { api, image } => pool::rm(&api, &image),
    }
}

fn run_session(command: SessionCommand) -> anyhow::Result<ExitCode> {
    match command {
        SessionCommand::Start {
            api,
            user,
            provider,
            ttl,
            json,
        } => session::start(&api, &user, &provider, ttl, json),
        SessionCommand::Show {
            api,
            id,
            events,
            json,
        } => session::show(&api, &id, events, json),
        SessionCommand::List { api, json } => session::list(&api, json),
        SessionCommand::Cancel { api, id } => session::cancel(&api, &id),
        SessionCommand::Wait { api, id, timeout } => session::wait(&api, &id, timeout),
        SessionCommand::Providers { api, json } => session::providers(&api, json),
    }
}

fn run_snapshot(command: SnapshotCommand) -> anyhow::Result<ExitCode> {
    match command {
        SnapshotCommand::Create {
            api,
            name,
            vm,
            image,
            json,
        } => snapshot::create(&api, name, vm, image, json),
        SnapshotCommand::List { api, json } => snapshot::list(&api, json),
        SnapshotCommand::Show { api, name, json } => snapshot::show(&api, &name, json),
        SnapshotCommand::Rm { api, name } => snapshot::rm(&api, &name),
    }
}

fn run_vm(data: &DataDir, command: VmCommand) -> anyhow::Result<ExitCode> {
    match command {
        VmCommand::Run(args) => vm_run::run(data, args),
        VmCommand::Create(args) => vm_api::create(args),
        VmCommand::List { api, json } => vm_api::list(&api, json),
        VmCommand::Show { api, id, json } => vm_api::show(&api, &id, json),
        VmCommand::Events { api, id, json } => vm_api::events(&api, &id, json),
        VmCommand::Console {
            api,
            id,
            lines,
            follow,
        } => vm_api::console(&api, &id, lines, follow),
        VmCommand::Logs {
            api,
            id,
            lines,
            service: None,
        } => vm_api::logs(&api, &id, lines),
        VmCommand::Logs {
            api,
            id,
            lines,
            service: Some(name),
        } => vm_agent::service_logs(&api, &id, &name, lines),
        VmCommand::Health { api, id, json } => vm_agent::health(&api, &id, json),
        VmCommand::Network { api, id, json } => vm_agent::network(&api, &id, json),
        VmCommand::Report { api, id, json } => vm_agent::report(&api, &id, json),
        VmCommand::Cp { api, from, to } => vm_agent::cp(&api, &from, &to),
        VmCommand::Why { api, id, json } => vm_api::why(&api, &id, json),
        VmCommand::Exec(args) => vm_exec::exec(args),
        VmCommand::View {
            api,
            id,
            ttl,
            list,
            revoke,
            json,
        } => vm_view::run(&api, &id, vm_view::Action::of(ttl, list, revoke), json),
        VmCommand::PortForward {
            api,
            address,
            id,
            ports,
        } => vm_port_forward::run(&api, &id, address, &ports),
        VmCommand::Hold { api, id } => vm_api::hold(&api, &id, true),
        VmCommand::Release { api, id } => vm_api::hold(&api, &id, false),
        VmCommand::Rm { api, id } => vm_api::remove(&api, &id),
        VmCommand::Stop { api, id } => vm_api::stop_or_start(&api, &id, "stop"),
        VmCommand::Start { api, id } => vm_api::stop_or_start(&api, &id, "start"),
    }
}
