//! `leash daemon`: loads and pins the programs, adopts running tasks, serves the API
//! and writes the audit log until SIGINT/SIGTERM (`leash::run`). Stopping it
//! leaves enforcement in place (pinned); `--cleanup` removes it.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use leash::{config::Config, daemon};

#[derive(Debug, clap::Args)]
pub(super) struct DaemonArgs {
    /// YAML config; without it the embedded defaults apply (see --print-default-config).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// API socket path (overrides socket.path of the config).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Metrics listener IP:PORT (overrides metrics.addr of the config).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Print the embedded default config and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Detach every pinned program, remove the pinned maps and the state file, and exit.
    /// Enforcement stops for every task.
    #[arg(long)]
    cleanup: bool,
}

pub(super) fn run(args: &DaemonArgs) -> anyhow::Result<ExitCode> {
    if args.print_default_config {
        print!("{}", Config::default_yaml());
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = Config::load(args.config.as_deref()).context("bad configuration")?;
    if let Some(socket) = &args.socket {
        config.socket.path.clone_from(socket);
        config.validate().context("bad --socket")?;
    }
    if let Some(addr) = args.metrics_addr {
        config.metrics.addr = addr;
        config.validate().context("bad --metrics-addr")?;
    }
    let filter = std::env::var("LEASH_LOG").unwrap_or_else(|_| config.log_level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .with_context(|| format!("bad log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if args.cleanup {
        let removed = daemon::cleanup(&config)?;
        println!(
            "removed {} pinned objects under {}; enforcement stopped",
            removed.len(),
            config.pin_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(leash::run(config, daemon::stop_signal()))?;
    Ok(ExitCode::SUCCESS)
}
