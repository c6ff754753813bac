//! `leash daemon`: loads and pins the programs, adopts running tasks, serves the API
//! and writes the audit log until SIGINT/SIGTERM. Stopping it leaves enforcement in
//! place (pinned); `--cleanup` removes it.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
};

use anyhow::{Context as _, bail};
use leash::{
    Enforcer, LoadOptions,
    config::Config,
    daemon::{self, AuditSink, Daemon},
    kernel,
    kernel::events::EventReader,
    metrics::{MetricsState, Readiness},
};
use tokio::{io::unix::AsyncFd, net::UnixListener, signal::unix::SignalKind};

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
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

pub fn run(args: &DaemonArgs) -> anyhow::Result<ExitCode> {
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
        let removed = kernel::cleanup(&config.pin_dir)?;
        daemon::clear_state(&config);
        let _ = std::fs::remove_file(&config.socket.path);
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
    runtime.block_on(serve(config))
}

#[expect(
    clippy::too_many_lines,
    reason = "the daemon's start-up in order; it moves into the library with the lifecycle"
)]
async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    // A policy or JWKS that others can rewrite would hand them every grant.
    leash::file_trust::check_config(&config)?;
    // Health endpoints come up first, so an orchestrator sees "alive, not ready" while
    // the programs load.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics.addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen for metrics on {} (metrics.addr)",
                config.metrics.addr
            )
        })?;
    let ready = Arc::new(Readiness::default());
    let metrics_state = MetricsState {
        ready: Arc::clone(&ready),
        daemon: Arc::new(tokio::sync::OnceCell::new()),
    };
    let mut metrics_stop = stop_rx.clone();
    let metrics = tokio::spawn(leash::metrics::serve(
        metrics_listener,
        metrics_state.clone(),
        async move {
            let _ = metrics_stop.changed().await;
        },
    ));
    tracing::info!(addr = %config.metrics.addr, "metrics, /healthz and /readyz listening");
    // A testing aid: lets a test observe /readyz before the programs are attached.
    if let Some(ms) = std::env::var("LEASH_DEBUG_STARTUP_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let mut enforcer = Enforcer::load(&LoadOptions {
        backend: config.backend,
        kernel_log_level: Some(log::max_level()),
        pin_dir: Some(config.pin_dir.clone()),
        capacities: config.expose_capacities().to_vec(),
        attach_scope: config.attach_scope,
    })
    .context("cannot start enforcement")?;
    tracing::info!(
        backend = %enforcer.backend(),
        reason = enforcer.backend_reason(),
        cgroup = %enforcer.cgroup().display(),
        pin_dir = %config.pin_dir.display(),
        programs = ?enforcer.attached(),
        "leash enforcing"
    );
    ready
        .attached
        .store(!enforcer.attached().is_empty(), Ordering::Release);
    spawn_kernel_log(&mut enforcer);
    let reader = enforcer
        .take_events()
        .context("event reader already taken")?;
    let audit = AuditSink::open_with(
        &config.audit_log,
        daemon::audit_file::Rotation {
            max_bytes: config.audit.max_bytes,
            keep: config.audit.keep,
            gid: config.audit.gid()?,
        },
    )?;
    let daemon = Daemon::new(enforcer, &config, audit)?;
    let _ = metrics_state.daemon.set(Arc::clone(&daemon));
    let listener = bind_socket(&config)?;
    // Tagged processes may not unlink or rename it, or a directory above it.
    if let Err(e) = daemon
        .lock()
        .enforcer
        .maps_mut()
        .protect_socket_only(&config.socket.path)
    {
        tracing::error!("cannot protect the API socket's name from tagged processes: {e}");
    }
    tracing::info!(socket = %config.socket.path.display(), audit_log = %config.audit_log.display(), "API listening");

    let events = tokio::spawn(pump_events(reader, Arc::clone(&daemon), Arc::clone(&ready)));
    let sweeper = tokio::spawn(daemon::sweeper(Arc::clone(&daemon), stop_rx.clone()));
    // SIGHUP: reload the policy (a bad file keeps the one in force).
    let _reloader = tokio::spawn(daemon::policy::reload_on_sighup(Arc::clone(&daemon)));
    let mut api_stop = stop_rx.clone();
    let api = tokio::spawn(leash::api::server::serve(
        listener,
        Arc::clone(&daemon),
        async move {
            let _ = api_stop.changed().await;
        },
    ));

    let mut term =
        tokio::signal::unix::signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let failed = tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping; enforcement stays pinned"); None }
        _ = term.recv() => { tracing::info!("SIGTERM: stopping; enforcement stays pinned"); None }
        r = events => Some(format!("event reader stopped: {r:?}")),
        r = api => Some(format!("API server stopped: {r:?}")),
        r = metrics => Some(format!("metrics server stopped: {r:?}")),
    };
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    // The pins are all the next daemon gets: complete them one last time.
    daemon.restore_pins();
    let _ = std::fs::remove_file(&config.socket.path);
    if let Some(why) = failed {
        bail!(why);
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds the API socket: owner root, mode 0660, the configured group.
fn bind_socket(config: &Config) -> anyhow::Result<UnixListener> {
    let path = &config.socket.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    refuse_live_socket(path)?;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind the API socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    if let Some(group) = &config.socket.group {
        let gid = group.resolve().context("socket.group")?;
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("cannot give group {gid} the socket {}", path.display()))?;
    }
    Ok(listener)
}

/// Another daemon answering on the socket means two daemons would fight over the pins.
fn refuse_live_socket(path: &Path) -> anyhow::Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another leash daemon is serving {}; stop it first (a restart hands enforcement over without a gap)",
            path.display()
        );
    }
    Ok(())
}

/// Forwards kernel-side log records (only emitted at the configured level).
fn spawn_kernel_log(enforcer: &mut Enforcer) {
    let Some(mut logger) = enforcer.take_logger() else {
        return;
    };
    // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd lives.
    let fd = unsafe {
        AsyncFd::register_with_interest(
            std::os::fd::AsRawFd::as_raw_fd(&logger),
            tokio::io::Interest::READABLE,
        )
    };
    match fd {
        Ok(fd) => {
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
        Err(e) => tracing::warn!("kernel log records unavailable: {e}"),
    }
}

/// Clears the event reader's readiness when the pump stops, however it stops.
struct Running(Arc<Readiness>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.events_running.store(false, Ordering::Release);
    }
}

/// Drains the decision ring buffer into the audit trail.
async fn pump_events(
    reader: EventReader,
    daemon: Arc<Daemon>,
    ready: Arc<Readiness>,
) -> anyhow::Result<()> {
    // SAFETY: the reader owns the ring buffer fd for as long as the AsyncFd lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot watch the event ring buffer: {e}"))?;
    ready.events_running.store(true, Ordering::Release);
    // Not ready again if this loop ever ends.
    let _running = Running(ready);
    loop {
        let mut guard = fd.readable_mut().await.context("event ring buffer")?;
        let batch = guard.get_inner_mut().drain();
        guard.clear_ready();
        drop(guard);
        if !batch.is_empty() {
            // In place (the other tasks move to the second worker): no hand-off to the
            // blocking pool and back between an exit and the task's teardown.
            tokio::task::block_in_place(|| daemon.on_kernel_events(batch));
        }
    }
}
