//! `leash daemon`: loads the programs, then streams decisions until SIGINT/SIGTERM.

use std::{io::Write as _, process::ExitCode};

use anyhow::Context as _;
use leash::{BackendChoice, Enforcer, LoadOptions, events::EventReader};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Enforcement backend: auto (lsm where the kernel allows it), lsm or portable.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(String))]
    backend: String,
    /// Log filter (tracing syntax), e.g. info or leash=debug.
    #[arg(long, env = "LEASH_LOG", default_value = "info")]
    log: String,
}

pub fn run(args: &DaemonArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .with_context(|| format!("bad --log filter {:?}", args.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let backend: BackendChoice = args.backend.parse().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(backend))
}

async fn serve(backend: BackendChoice) -> anyhow::Result<ExitCode> {
    let mut enforcer = Enforcer::load(&LoadOptions {
        backend,
        kernel_log_level: Some(log::max_level()),
        ..LoadOptions::default()
    })
    .context("cannot start enforcement")?;
    tracing::info!(
        backend = %enforcer.backend(),
        reason = enforcer.backend_reason(),
        cgroup = %enforcer.cgroup().display(),
        programs = ?enforcer.attached(),
        "leash enforcing"
    );
    if let Some(mut logger) = enforcer.take_logger() {
        // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd lives.
        let fd = unsafe {
            AsyncFd::register_with_interest(
                std::os::fd::AsRawFd::as_raw_fd(&logger),
                tokio::io::Interest::READABLE,
            )
        };
        if let Ok(fd) = fd {
            tokio::spawn(async move {
                loop {
                    let Ok(mut guard) = fd.readable().await else {
                        break;
                    };
                    logger.flush();
                    guard.clear_ready();
                }
            });
        }
    }
    let reader = enforcer
        .take_events()
        .context("event reader already taken")?;
    let events = tokio::spawn(stream_events(reader));

    let mut term =
        tokio::signal::unix::signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        r = events => r.context("event reader failed")??,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes each decision as one JSON line on stdout.
async fn stream_events(reader: EventReader) -> anyhow::Result<()> {
    // SAFETY: the reader owns the ring buffer fd for as long as the AsyncFd lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot watch the event ring buffer: {e}"))?;
    loop {
        let mut guard = fd.readable_mut().await.context("event ring buffer")?;
        let mut out = std::io::stdout().lock();
        for d in guard.get_inner_mut().drain() {
            serde_json::to_writer(&mut out, &d)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        drop(out);
        guard.clear_ready();
    }
}
