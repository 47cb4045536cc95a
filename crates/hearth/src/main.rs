//! The `hearth` command. Parses arguments, sets up logging, and hands each
//! subcommand to its module in `commands/`; errors are printed once, with
//! their whole chain, and turned into a non-zero exit.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // `serve` sets up its own logger, in the format it was asked for, as
    // the global one: a thread outside its runtime logs the same way.
    if !matches!(cli.command, cli::Command::Serve(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("HEARTH_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hearth: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
