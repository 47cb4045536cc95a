//! One module per subcommand.

mod doctor;
mod image;
mod kernel;
mod vm_run;

use std::process::ExitCode;

use hearth_guestkit::DataDir;

use crate::cli::{Cli, Command, ImageCommand, KernelCommand, VmCommand};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let data = cli
        .data_dir
        .map(DataDir::new)
        .unwrap_or_else(DataDir::from_env);
    match cli.command {
        Command::Kernel(KernelCommand::Fetch) => kernel::fetch(&data),
        Command::Kernel(KernelCommand::Inspect { path }) => kernel::inspect(&path),
        Command::Kernel(KernelCommand::Extract { bzimage, output }) => {
            kernel::extract(&bzimage, &output)
        }
        Command::Image(ImageCommand::Build { name, force }) => image::build(&data, name, force),
        Command::Image(ImageCommand::List) => image::list(&data),
        Command::Vm(VmCommand::Run(args)) => vm_run::run(&data, args),
        Command::Doctor => doctor::run(&data),
    }
}
