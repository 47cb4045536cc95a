//! `hearth cli start|stop|show|exec|rm USER`: each user's CLI VM through
//! the API (`/v1/cli/{user}`). `exec` finds the user's VM and runs the
//! command there as `hearth vm exec` does.

use std::process::ExitCode;

use hearth_server::cli_vms::{CliVm, StartCli};

use crate::cli::{CliCommand, ExecArgs};
use crate::commands::client::Client;
use crate::commands::vm_exec;

pub fn run(command: CliCommand) -> anyhow::Result<ExitCode> {
    match command {
        CliCommand::Start {
            api,
            user,
            image,
            json,
        } => {
            let body = StartCli { image };
            let vm: CliVm = Client::new(&api)?.post(&path(&user), Some(&body))?;
            print(&vm, json)
        }
        CliCommand::Show { api, user, json } => print(&Client::new(&api)?.get(&path(&user))?, json),
        CliCommand::Stop { api, user } => {
            let none: Option<&()> = None;
            let vm: CliVm = Client::new(&api)?.post(&format!("{}/stop", path(&user)), none)?;
            print(&vm, false)
        }
        CliCommand::Rm { api, user } => print(&Client::new(&api)?.delete(&path(&user))?, false),
        CliCommand::Exec {
            api,
            user,
            timeout,
            tty,
            interactive,
            command,
        } => {
            let vm: CliVm = Client::new(&api)?.get(&path(&user))?;
            vm_exec::exec(ExecArgs {
                api,
                id: vm.vm,
                timeout,
                tty,
                interactive,
                env: Vec::new(),
                command,
            })
        }
    }
}

fn path(user: &str) -> String {
    format!("/v1/cli/{user}")
}

fn print(vm: &CliVm, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(vm)?);
        return Ok(ExitCode::SUCCESS);
    }
    let credentials: Vec<String> = vm
        .credentials
        .iter()
        .map(|(p, v)| format!("{p} v{v}"))
        .collect();
    let credentials = match credentials.is_empty() {
        true => "none yet".to_owned(),
        false => credentials.join(", "),
    };
    println!(
        "CLI VM of {} ({}): {} is {}, image {}; credentials: {credentials}",
        vm.user, vm.tenant, vm.vm, vm.state, vm.image
    );
    Ok(ExitCode::SUCCESS)
}
