//! `ociregistry serve`: wires the pieces together. Opens the store, starts the
//! fetcher's tokio runtime and one monoio worker per core, waits for SIGINT or
//! SIGTERM, then shuts down in order: stop accepting, let responses in progress
//! finish within the grace period, cancel downloads, leave no temp files.
//! SIGHUP reloads what can be reloaded (see `reload`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::watch;

use crate::cli::{Cli, IoDriver, ServeArgs};
use crate::config::Settings;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::serve::{self, Driver, Shared};
use crate::store::Store;
use crate::systemd::Notifier;

pub fn run(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    let settings = Arc::new(Settings::resolve(cli, args)?);
    let _log = crate::logging::init(settings.log_level, settings.log_format, settings.log_file.as_deref())?;
    let readiness = Arc::new(Readiness::new(settings.preload_images.is_some()));
    let systemd = Notifier::from_env();
    systemd.status("indexing the store");
    if let Some(port) = settings.health_port {
        // Opened first: liveness answers while the store is indexed and images preload.
        let listener = std::net::TcpListener::bind((settings.host.trim_matches(['[', ']']), port))
            .with_context(|| format!("cannot listen for health probes on {}:{port}", settings.host))?;
        let readiness = readiness.clone();
        std::thread::Builder::new()
            .name("health".into())
            .spawn(move || crate::health::serve(listener, readiness))
            .context("cannot start the health thread")?;
        tracing::info!(port, "liveness at /health, readiness at /ready");
    }
    raise_open_files_limit();
    crate::tls::install_crypto_provider();
    if let Some(ca) = settings.tls.as_ref().and_then(|t| t.unused_ca.as_ref()) {
        tracing::warn!(
            key = "serverTlsConfig.ca",
            file = %ca.display(),
            "serverTlsConfig.ca is only used with clientAuth: verify; with clientAuth: none no client \
             certificate is asked for, so this CA is not used"
        );
    }
    let tls = match settings.tls.clone() {
        Some(t) => Some(Arc::new(crate::tls::ServerCertificates::load(t)?)),
        None => None,
    };
    let store = Arc::new(Store::open(&settings.image_path, settings.memory)?);
    crate::ops::migrate::at_startup(&store).context("cannot import the Go ociregistry cache in the image path")?;
    readiness.store_indexed();
    let threads = settings.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let driver = choose_driver(settings.io_driver)?;
    serve::http::set_write_stall_timeout(settings.write_timeout);
    let (listeners, addr) = serve::bind(&settings.host, settings.port, threads)
        .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        // One per download's writer (mostly asleep) plus short store operations.
        .max_blocking_threads(2048)
        .thread_name("fetcher")
        .enable_all()
        .build()
        .context("cannot start the fetcher runtime")?;
    let names = crate::metrics::UpstreamNames::new(settings.registries.iter().map(|r| &r.name));
    let metrics = Arc::new(Metrics::new(names));
    metrics.attach_store(store.clone());
    let mut kernel_tls = crate::tls::offload::Offload::off();
    if let Some(certs) = &tls {
        let probe = crate::tls::KernelTls::probe();
        let wanted = certs.settings().kernel_tls == crate::config::server_tls::KernelTlsMode::Auto;
        probe.log(wanted);
        metrics.note_kernel_tls(probe.available);
        // The `kernel-tls=attempt` test hook: every connection tries, as if the kernel carried every kind.
        let attempt = crate::faults::armed_for("kernel-tls", "attempt");
        let carries = if attempt { crate::tls::kernel::Kinds::ALL } else { probe.carries };
        if wanted {
            kernel_tls = crate::tls::offload::Offload::new(carries);
        }
    }
    if let Some(port) = settings.metrics_port {
        let listener = std::net::TcpListener::bind((settings.host.trim_matches(['[', ']']), port))
            .with_context(|| format!("cannot listen for metrics on {}:{port}", settings.host))?;
        let metrics = metrics.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || crate::metrics::serve_exposition(listener, metrics))
            .context("cannot start the metrics thread")?;
        tracing::info!(port, "Prometheus metrics at /metrics");
    }
    let (stop, shutdown) = watch::channel(false);
    let fetch = crate::fetch::start(
        runtime.handle(),
        settings.clone(),
        store.clone(),
        shutdown.clone(),
        metrics.block(),
        metrics.upstreams.clone(),
    )
    .map_err(|e| anyhow::anyhow!("upstream configuration: {e}"))?;
    runtime.spawn(flush_pulled_times(store.clone(), shutdown.clone()));
    if let Some(prune) = settings.prune.clone() {
        let run = crate::ops::prune::background::run(store.clone(), prune, settings.pinned.clone(), shutdown.clone());
        runtime.spawn(run);
    }
    if let Some(marks) = settings.evict {
        let run = crate::ops::prune::evict::run(
            store.clone(),
            marks,
            settings.pinned.clone(),
            settings.air_gapped,
            shutdown.clone(),
        );
        runtime.spawn(run);
    }
    if settings.hello_world {
        let name = crate::ops::load::hello_world::NAME;
        match crate::ops::load::hello_world::install(&store) {
            Ok(digest) => tracing::info!(image = name, %digest, "serving the built-in hello-world image"),
            Err(e) => {
                tracing::error!(image = name, error = %e, "the built-in hello-world image could not be installed")
            }
        }
    }
    if let Some(spec) = &settings.preload_images {
        let platforms = crate::ops::load::Platforms::One(settings.platform.clone());
        systemd.status("preloading images");
        crate::ops::load::preload(&runtime, store.clone(), fetch.clone(), spec, platforms);
        readiness.preload_done();
    }
    // SIGHUP reloads; the handler is installed before "listening" is logged.
    let reloading = {
        let (cli, args) = (cli.clone(), args.clone());
        let resolve: crate::reload::Resolve = Box::new(move || Settings::resolve(&cli, &args));
        let fetcher = fetch.clone();
        let mut hooks = vec![crate::reload::Hook::new("registries", move |new: &Settings| {
            fetcher.reload_registries(&new.registries)
        })];
        if let Some(certs) = tls.clone() {
            // The files named at startup are read again; other serverTlsConfig changes need a restart.
            hooks.push(crate::reload::Hook::new("serverTlsConfig", move |_: &Settings| match certs.reload() {
                Ok(()) => Ok("serverTlsConfig reloaded: new connections use the new certificates".to_string()),
                Err(e) => Err(format!(
                    "serverTlsConfig reload failed ({e}); still serving with the certificates loaded before"
                )),
            }));
        }
        let _entered = runtime.enter();
        crate::reload::on_sighup(resolve, hooks).context("cannot install the SIGHUP handler")?
    };
    runtime.spawn(reloading);
    let job_env = crate::admin::JobEnv {
        store: store.clone(),
        fetch: fetch.clone(),
        settings: settings.clone(),
        runtime: runtime.handle().clone(),
        shutdown: shutdown.clone(),
    };
    let admin = Arc::new(crate::admin::Admin::new(settings.admin.clone(), job_env, crate::admin::builtin_kinds()));
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        store: store.clone(),
        fetch,
        shutdown,
        blocking: runtime.handle().clone(),
        stopping: std::sync::atomic::AtomicBool::new(false),
        metrics,
        connections_per_thread: settings.max_connections.div_ceil(threads),
        admin: admin.clone(),
        tls: tls.clone(),
        kernel_tls,
        readiness: readiness.clone(),
    });
    readiness.expect_workers(threads);
    if let Some(certs) = tls.clone() {
        runtime.spawn(crate::tls::server::watch(certs, shared.shutdown.clone()));
    }
    let mut workers = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("serve-{i}"))
            .spawn(move || {
                if let Err(e) = serve::run_worker(i, driver, listener, shared) {
                    tracing::error!(worker = i, error = %e, "serving thread failed");
                }
            })
            .context("cannot start a serving thread")?;
        workers.push(handle);
    }
    // "listening" (and readiness) means accepting: wait for every serving thread's accept loop.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !readiness.listening() {
        if workers.iter().any(|w| w.is_finished()) {
            bail!("a serving thread failed to start (see above)");
        }
        if Instant::now() > deadline {
            bail!("the serving threads did not start accepting within 30 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // Before "listening" is logged: whoever waits for that line finds the file.
    let admin_file = crate::admin::discovery::publish(store.layout(), addr)
        .map_err(
            |e| tracing::warn!(error = %e, "cannot write the .admin file: local commands will not find this server"),
        )
        .ok();
    tracing::info!(
        %addr,
        threads,
        driver = if driver == Driver::Uring { "io_uring" } else { "epoll" },
        image_path = %settings.image_path.display(),
        air_gapped = settings.air_gapped,
        tls = tls_summary(tls.as_deref()),
        "listening"
    );
    systemd.send(&format!("READY=1\nSTATUS=serving on {addr}"));
    runtime.block_on(async {
        tokio::select! {
            _ = wait_for_signal() => {}
            _ = admin.stop_requested() => {}
        }
    });
    drop(admin_file);
    readiness.stopping();
    systemd.send("STOPPING=1\nSTATUS=stopping: finishing responses in progress");
    tracing::info!("shutting down: no new connections; finishing responses in progress");
    shared.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = stop.send(true);
    let deadline = Instant::now() + crate::config::SHUTDOWN_GRACE + Duration::from_secs(2);
    while workers.iter().any(|w| !w.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(shared);
    runtime.shutdown_timeout(Duration::from_secs(5));
    if let Err(e) = store.flush_pulled() {
        tracing::warn!(error = %e, "cannot write the last-pulled times");
    }
    let tmp = store.layout().tmp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Writes the manifests' last-pulled times out every `FLUSH_EVERY` until shutdown
/// (which writes them once more, after the serving threads handed theirs over).
async fn flush_pulled_times(store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(crate::store::access::FLUSH_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let store = store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush_pulled()).await {
            tracing::warn!(error = %e, "cannot write the last-pulled times");
        }
    }
}

/// The startup line's account of HTTPS, as the Go version's banner gives it.
fn tls_summary(tls: Option<&crate::tls::ServerCertificates>) -> String {
    let Some(t) = tls.map(|t| t.settings()) else { return "none".into() };
    let mut s = format!("cert={}, key={}", t.cert.display(), t.key.display());
    if let Some(ca) = &t.ca {
        s.push_str(&format!(", ca={}", ca.display()));
    }
    let verify = t.client_auth == crate::config::server_tls::ClientAuth::Verify;
    s.push_str(if verify { ", client verify=verify" } else { ", client verify=none" });
    s
}

fn choose_driver(wanted: IoDriver) -> anyhow::Result<Driver> {
    let usable = serve::uring_available() && probe_uring();
    match (wanted, usable) {
        (IoDriver::Epoll, _) => Ok(Driver::Epoll),
        (_, true) => Ok(Driver::Uring),
        (IoDriver::Uring, false) => bail!(
            "--io-driver uring: io_uring is not available (kernel, kernel.io_uring_disabled, or a seccomp profile refuses it)"
        ),
        (IoDriver::Auto, false) => {
            tracing::warn!("io_uring is not available here (kernel, sysctl or seccomp); serving with the epoll driver");
            Ok(Driver::Epoll)
        }
    }
}

/// Builds one throwaway io_uring runtime: detection alone can pass where setup
/// with our ring size fails (RLIMIT_MEMLOCK on older kernels).
fn probe_uring() -> bool {
    std::thread::spawn(|| monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().with_entries(1024).build().is_ok())
        .join()
        .unwrap_or(false)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Raises the soft open-files limit to the hard limit: every connection and
/// every streamed blob holds a descriptor.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(from = old, to = lim.rlim_max, "raised the open files limit");
            }
        }
    }
}
