//! The daemon from start to stop: health first, then the programs, the task registry
//! and the API; then every part runs until the shutdown future resolves or one of them
//! fails, and each is awaited before the pins are completed one last time.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
};

use anyhow::{Context as _, bail};
use tokio::{net::UnixListener, sync::watch, task::JoinHandle};

use super::{
    AuditSink, Daemon, audit_file, file_denials, kernel_events,
    metrics_http::{self, MetricsState, Readiness},
    policy, sweep,
};
use crate::{Enforcer, LoadOptions, audit_chain::HeadSigner, config::Config};

/// Every part's stop signal: one channel, flipped to `true` once.
#[derive(Clone)]
pub(super) struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Resolves once the daemon stops (or nothing can tell it to any more).
    pub(super) async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// [`Self::wait`] as an owned future, for the servers' graceful shutdown.
    async fn wait_owned(mut self) {
        self.wait().await;
    }
}

/// Resolves on SIGINT or SIGTERM (logging which); an error when SIGTERM cannot be
/// watched. Registered on first poll, so a signal during start-up keeps its default.
pub async fn stop_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping; enforcement stays pinned"),
        _ = term.recv() => tracing::info!("SIGTERM: stopping; enforcement stays pinned"),
    }
    Ok(())
}

/// The future an API server is told to stop by.
pub(super) type StopFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs the daemon until `shutdown` resolves (e.g. [`stop_signal`]) or a part that must
/// run fails (the API, the metrics listener, the event pump). Enforcement stays pinned
/// after it returns. Needs a multi-thread runtime (the event pump works in place).
///
/// `serve_api` is the API server to run on the bound socket (`crate::run` hands it
/// `api::server::serve`): the API sits above the daemon, so the daemon is given its
/// server instead of importing it.
pub async fn run<S, F>(
    config: Config,
    serve_api: S,
    shutdown: impl Future<Output = std::io::Result<()>>,
) -> anyhow::Result<()>
where
    S: FnOnce(UnixListener, Arc<Daemon>, StopFuture) -> F,
    F: Future<Output = std::io::Result<()>> + Send + 'static,
{
    // A policy or JWKS that others can rewrite would hand them every grant.
    crate::file_trust::check_config(&config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopping = Stopping(stop_rx);
    // Health endpoints come up first, so an orchestrator sees "alive, not ready" while
    // the programs load.
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
    // Descriptors are not what limits connections: `connections:` is.
    let nofile = crate::http::raise_nofile();
    tracing::debug!(nofile, "open descriptor limit");
    let metrics_admission =
        crate::http::Admission::new(super::metrics_limits(&config), Arc::default());
    let mut metrics = Some(tokio::spawn(metrics_http::serve(
        metrics_listener,
        metrics_state.clone(),
        Arc::clone(&metrics_admission),
        stopping.clone().wait_owned(),
    )));
    tracing::info!(addr = %config.metrics.addr, "metrics, /healthz and /readyz listening");
    // A testing aid: lets a test observe /readyz before the programs are attached.
    if let Some(ms) = std::env::var("LEASH_DEBUG_STARTUP_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    super::fault::announce();
    let mut enforcer = load(&config)?;
    ready
        .attached
        .store(!enforcer.attached().is_empty(), Ordering::Release);
    let kernel_log = kernel_events::spawn_kernel_log(&mut enforcer, stopping.clone());
    let reader = enforcer
        .take_events()
        .context("event reader already taken")?;
    let daemon = Daemon::new(
        enforcer,
        &config,
        open_audit(&config)?,
        Arc::clone(&metrics_admission.overload),
    )?;
    let _ = metrics_state.daemon.set(Arc::clone(&daemon));
    let listener = bind_socket(&config)?;
    guard_api_socket(&daemon, &config.socket.path);
    tracing::info!(socket = %config.socket.path.display(), audit_log = %config.audit_log.display(), "API listening");

    let mut events = Some(tokio::spawn(kernel_events::pump_events(
        reader,
        Arc::clone(&daemon),
        Arc::clone(&ready),
        stopping.clone(),
    )));
    let sweeper = tokio::spawn(sweep::sweeper(Arc::clone(&daemon), stopping.clone()));
    // Landlock's denials, from the audit log while the kernel's audit is on.
    let file_denials = tokio::spawn(file_denials::pump(Arc::clone(&daemon), stopping.clone()));
    // SIGHUP: reload the policy (a bad file keeps the one in force).
    let reloader = tokio::spawn(policy::reload_on_sighup(
        Arc::clone(&daemon),
        stopping.clone(),
    ));
    let mut api = Some(tokio::spawn(serve_api(
        listener,
        Arc::clone(&daemon),
        Box::pin(stopping.clone().wait_owned()),
    )));

    let failed = tokio::select! {
        r = shutdown => r.err().map(|e| format!("cannot watch SIGTERM: {e}")),
        r = finish(&mut events) => Some(format!("event reader stopped: {r:?}")),
        r = finish(&mut api) => Some(format!("API server stopped: {r:?}")),
        r = finish(&mut metrics) => Some(format!("metrics server stopped: {r:?}")),
    };
    let _ = stop_tx.send(true);
    join("event reader", events).await;
    // The servers finish the requests in flight; a stream that never ends on its own
    // (`leash events --follow`) is cut after a grace period.
    join_within("API server", api).await;
    join_within("metrics server", metrics).await;
    join("kernel log", kernel_log).await;
    join("sweeper", Some(sweeper)).await;
    join("file denials", Some(file_denials)).await;
    daemon.audit.sign_head();
    join("policy reloader", Some(reloader)).await;
    // The pins are all the next daemon gets: complete them one last time.
    daemon.restore_pins();
    if let Err(e) = std::fs::remove_file(&config.socket.path) {
        tracing::warn!(socket = %config.socket.path.display(), "cannot remove the API socket: {e}");
    }
    if let Some(why) = failed {
        bail!(why);
    }
    Ok(())
}

/// The audit log as configured, its chain's heads signed by the key in `state_dir`.
fn open_audit(config: &Config) -> anyhow::Result<AuditSink> {
    let signer =
        HeadSigner::load_or_create(&config.state_dir).context("the audit log's signing key")?;
    let rotation = audit_file::Rotation {
        max_bytes: config.audit.max_bytes,
        keep: config.audit.keep,
        gid: config.audit.gid()?,
    };
    Ok(AuditSink::open_with(
        &config.audit_log,
        rotation,
        Some(signer),
    )?)
}

/// Awaits a part that must keep running; taking it out once it ended, so it is never
/// awaited again.
/// Keeps tagged processes from unlinking or renaming the bound API socket (or a
/// directory above it), and opens it to them all.
fn guard_api_socket(daemon: &Daemon, path: &Path) {
    // Tagged processes may not unlink or rename it, or a directory above it.
    if let Err(e) = daemon.lock().enforcer.maps_mut().protect_socket_only(path) {
        tracing::error!("cannot protect the API socket's name from tagged processes: {e}");
    }
    // Tagged processes reach unix sockets only by grant; the API socket is open to them
    // all, so that they hear a clear 403 from the API instead of being killed. Granted
    // once bound: the lsm backend records the socket file itself.
    if let Err(e) = daemon
        .lock()
        .enforcer
        .maps_mut()
        .grant_unix_everywhere(path)
    {
        tracing::error!("cannot open the API socket to tagged processes: {e}");
    }
}

async fn finish<T>(handle: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match handle {
        Some(h) => {
            let r = h.await;
            *handle = None;
            r
        }
        None => std::future::pending().await,
    }
}

/// Awaits a part after the stop; its result was reported when it ended early, so only
/// a panic is news here.
async fn join<T>(part: &str, handle: Option<JoinHandle<T>>) {
    if let Some(handle) = handle
        && let Err(e) = handle.await
    {
        tracing::error!("{part} ended abnormally: {e}");
    }
}

/// How long the servers may take to finish their requests after the stop.
const SERVER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// [`join`] for a server: after [`SERVER_GRACE`] its open connections are closed.
async fn join_within<T>(part: &str, handle: Option<JoinHandle<T>>) {
    let Some(mut handle) = handle else {
        return;
    };
    match tokio::time::timeout(SERVER_GRACE, &mut handle).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!("{part} ended abnormally: {e}"),
        Err(_) => {
            handle.abort();
            tracing::info!("{part}: connections still open after {SERVER_GRACE:?}; closed");
        }
    }
}

/// Set (to anything) in the daemon's environment, it behaves as on a kernel without the
/// kfunc `bpf_send_signal_task`: for tests of the fallbacks.
pub(crate) const WITHOUT_KFUNCS_ENV: &str = "LEASH_TEST_WITHOUT_KFUNCS";

/// Loads, attaches and pins the programs.
fn load(config: &Config) -> anyhow::Result<Enforcer> {
    let enforcer = Enforcer::load(&LoadOptions {
        backend: config.backend,
        kernel_log_level: Some(log::max_level()),
        pin_dir: Some(config.pin_dir.clone()),
        capacities: config.expose_capacities().to_vec(),
        attach_scope: config.attach_scope,
        // Tests only: as on a kernel without `bpf_send_signal_task`.
        without_kfuncs: std::env::var_os(WITHOUT_KFUNCS_ENV).is_some(),
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
    Ok(enforcer)
}

/// Binds the API socket: owner root, mode 0660, the configured group.
fn bind_socket(config: &Config) -> anyhow::Result<UnixListener> {
    let path = &config.socket.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    refuse_live_socket(path)?;
    // A stale socket of a stopped daemon; absent is fine, and bind reports the rest.
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
