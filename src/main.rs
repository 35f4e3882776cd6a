//! The `calsync` binary: command-line parsing and process set-up only.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use calsync::telemetry::{self, LogFormat};

/// calsync: sync Get It Done! tasks with Google, Outlook and Apple/CalDAV calendars.
#[derive(Parser, Debug)]
#[command(name = "calsync", version, about, long_about = None)]
struct Cli {
    /// Log format: text for people, json for log pipelines.
    #[arg(long, global = true, value_enum, default_value = "text", env = "CALSYNC_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinitions of CalendarConnection and TaskSync as YAML.
    Crdgen,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // One process-level rustls crypto provider, before anything opens a TLS connection: kube
    // uses ring and reqwest would pick aws-lc, and with two candidates the first real HTTPS
    // call panics. `Err` means one is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crdgen => {
            let yaml = calsync::resources::crds_yaml().context("rendering the CRDs as YAML")?;
            std::io::stdout().write_all(yaml.as_bytes()).context("writing the CRDs to stdout")?;
        }
    }
    Ok(())
}
