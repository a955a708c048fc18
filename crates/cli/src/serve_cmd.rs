//! `vgrid serve`: the embedded server (controller, API and a local node
//! agent in one process, state under the data directory).
//!
//! It serves HTTPS with its own CA (made at first start, `tls/` in the data
//! directory) and writes a join token (`join-token`, 0600) that nodes use
//! to join. Plain HTTP only with `--insecure-http`, and only on loopback.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::connect::{JOIN_TOKEN_FILE, TLS_DIR, URL_FILE};

/// Run the controller, its HTTP API and a local node agent. Settings not
/// given as flags or environment variables come from the configuration
/// file's `[serve]`, `[vm]` and `[scheduler]` tables (docs/config.md).
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: crate::config::ConfigArg,
    /// Address to listen on [default: 127.0.0.1:7777] (port 0 picks a free
    /// port; the URL is written to `$VGRID_DATA_DIR/url`).
    #[arg(long, env = "VGRID_LISTEN")]
    listen: Option<SocketAddr>,
    /// CPUs the local node offers to VMs (default: all).
    #[arg(long, env = "VGRID_CPUS")]
    cpus: Option<u32>,
    /// Memory the local node offers to VMs, in MiB (default: 3/4 of RAM).
    #[arg(long, env = "VGRID_MEMORY_MB")]
    memory_mb: Option<u64>,
    /// Do not run a local node agent (nodes come from `vgrid agent`).
    #[arg(long, env = "VGRID_NO_AGENT", num_args = 0..=1, default_missing_value = "true")]
    no_agent: Option<bool>,
    /// How often agents must check in, in milliseconds [default: 2000].
    #[arg(long, env = "VGRID_HEARTBEAT_MS", hide = true)]
    heartbeat_ms: Option<u64>,
    /// Silence after which a node counts as lost, in milliseconds
    /// [default: 10000].
    #[arg(long, env = "VGRID_LOST_AFTER_MS", hide = true)]
    lost_after_ms: Option<u64>,
    /// Serve plain HTTP instead of HTTPS (tokens in clear): only on a
    /// loopback address, for tests on one machine.
    #[arg(long, env = "VGRID_INSECURE_HTTP", num_args = 0..=1, default_missing_value = "true")]
    insecure_http: Option<bool>,
}

/// The settings of `vgrid serve` once flags, environment and file are
/// merged.
struct Serve {
    listen: SocketAddr,
    cpus: Option<u32>,
    memory_mb: Option<u64>,
    no_agent: bool,
    insecure_http: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let file = args.config.load()?;
    let data_dir = crate::data_dir::data_dir_or(file.serve.data_dir.as_deref())?;
    let mut cfg = vgrid_controller::Config::new(data_dir.clone());
    cfg.heartbeat_ms = args
        .heartbeat_ms
        .or(file.serve.heartbeat_ms)
        .unwrap_or(cfg.heartbeat_ms)
        .max(10);
    cfg.lost_after_ms = args
        .lost_after_ms
        .or(file.serve.lost_after_ms)
        .unwrap_or(cfg.lost_after_ms)
        .max(cfg.heartbeat_ms * 2);
    file.scheduler.apply(&mut cfg);
    let args = Serve {
        listen: args
            .listen
            .or(file.serve.listen)
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7777))),
        cpus: args.cpus.or(file.serve.cpus),
        memory_mb: args.memory_mb.or(file.serve.memory_mb),
        no_agent: args.no_agent.or(file.serve.no_agent).unwrap_or(false),
        insecure_http: args
            .insecure_http
            .or(file.serve.insecure_http)
            .unwrap_or(false),
    };
    let runtime = file.vm.runtime_config(&data_dir)?;
    // The same roots the node agents use (`VGRID_MOUNT_ROOTS`).
    cfg.staging_roots = runtime.mount_roots.clone();
    // Without QEMU this host cannot run VMs, but it can still schedule
    // them on nodes that join.
    let no_qemu = if args.no_agent {
        None
    } else {
        vgrid_vm::host::HostTools::discover(runtime.qemu.as_deref()).err()
    };
    if let Some(why) = &no_qemu {
        crate::logging::say(&format!(
            "warning: {why}: running as a controller only, without a local node agent (nodes join with `vgrid agent`)"
        ));
    }
    let tls = if args.insecure_http {
        anyhow::ensure!(
            args.listen.ip().is_loopback(),
            "--insecure-http serves tokens in clear: only on a loopback address, not {}",
            args.listen
        );
        None
    } else {
        let pki = vgrid_pki::ServerPki::load_or_create(
            &data_dir.join(TLS_DIR),
            &certificate_names(&args.listen),
        )?;
        let join = join_token(&data_dir, &pki)?;
        cfg.join = Some(vgrid_controller::JoinConfig {
            secret_hash: *vgrid_pki::hash_secret(&join.secret).as_bytes(),
            ca_pem: pki.ca_pem.clone(),
        });
        Some(pki)
    };
    let controller = vgrid_controller::Controller::start(cfg)
        .with_context(|| format!("cannot start the controller in {}", data_dir.display()))?;
    let handle = controller.handle();
    let handle_store = vgrid_server::Backend::store(&handle);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        write_file(&data_dir.join(URL_FILE), &url)?;
        crate::logging::say(&format!("serving {url} (state in {})", data_dir.display()));
        let server = match &tls {
            Some(pki) => {
                let config = Arc::new(pki.server_config()?);
                tokio::spawn(vgrid_server::serve_tls(
                    listener,
                    config,
                    Arc::new(handle),
                    shutdown_signal(),
                ))
            }
            None => tokio::spawn(vgrid_server::serve(
                listener,
                Arc::new(handle),
                shutdown_signal(),
            )),
        };
        let agent = if args.no_agent || no_qemu.is_some() {
            None
        } else {
            // The local agent talks to the controller over HTTP(S) like
            // any other agent, with the admin token that never leaves the
            // host.
            let token = std::fs::read_to_string(data_dir.join(vgrid_controller::ADMIN_TOKEN_FILE))
                .context("cannot read the admin token for the local agent")?;
            let mut cfg = crate::agent_cmd::agent_config(
                &data_dir,
                url.clone(),
                token.trim().to_string(),
                Some("local".into()),
                args.cpus,
                args.memory_mb,
                Default::default(),
            )?;
            cfg.tls = tls
                .as_ref()
                .map(|pki| vgrid_pki::client_config(pki.ca_cert.clone()))
                .transpose()?;
            let driver = crate::agent_cmd::driver(&data_dir, runtime, file.vm.keep_config()?)?;
            crate::logging::say(&format!(
                "local node agent: {} CPUs, {} MiB",
                cfg.cpus, cfg.memory_mb
            ));
            Some(tokio::spawn(vgrid_agent::run(
                cfg,
                driver,
                shutdown_signal(),
            )))
        };
        // The images built on this host go into the store, for nodes
        // that lack them: now, and again when one is rebuilt.
        let publisher = tokio::spawn(publish_images_forever(
            data_dir.clone(),
            handle_store.clone(),
        ));
        let served = server.await.context("the HTTP server task failed")?;
        publisher.abort();
        if let Some(agent) = agent {
            agent.abort();
        }
        served.context("the HTTP server failed")
    });
    let stopped = controller.stop();
    served?;
    stopped.context("the controller failed")?;
    Ok(ExitCode::SUCCESS)
}

/// How often the images of this host are looked at for a new build.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

async fn publish_images_forever(
    data_dir: std::path::PathBuf,
    store: Option<Arc<vgrid_cas::Store>>,
) {
    let Some(store) = store else {
        return;
    };
    loop {
        let (dir, cas) = (data_dir.clone(), store.clone());
        match tokio::task::spawn_blocking(move || publish_images(&dir, &cas)).await {
            Ok(Ok(names)) if !names.is_empty() => {
                crate::logging::say(&format!(
                    "published image(s) {} to the store",
                    names.join(", ")
                ));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "cannot publish the images"),
            Err(_) => {}
        }
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
}

/// Puts every image of this host whose build the store does not name yet
/// into the store (`images/<name>`); returns the names it published.
fn publish_images(
    data_dir: &std::path::Path,
    cas: &vgrid_cas::Store,
) -> anyhow::Result<Vec<String>> {
    let images = vgrid_image::ImageStore::open(data_dir)?;
    let mut published = Vec::new();
    for entry in images.list()? {
        let Ok(image) = entry.image else {
            continue;
        };
        let reference = format!("images/{}", entry.name);
        let current = cas
            .get_ref(&reference)?
            .and_then(|id| cas.get_manifest(&id).ok())
            .and_then(|m| m.meta.get(vgrid_image::transfer::META_BUILD).cloned());
        if current.as_deref() == Some(image.manifest.inputs_hash.as_str()) {
            continue;
        }
        let m = images.publish(&entry.name, cas)?;
        cas.set_ref(&reference, &m.id())?;
        published.push(entry.name);
    }
    Ok(published)
}

/// The names a new server certificate carries (clients check the CA, not
/// the name; these tell a human what the certificate is for).
fn certificate_names(listen: &SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    names
}

/// The join token of this controller: read from `join-token`, or made
/// (and written 0600) when missing or when it pins another CA (the CA was
/// made anew). Delete the file to make a new one at the next start.
fn join_token(
    data_dir: &std::path::Path,
    pki: &vgrid_pki::ServerPki,
) -> anyhow::Result<vgrid_pki::JoinToken> {
    let path = data_dir.join(JOIN_TOKEN_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = vgrid_pki::JoinToken::parse(&text).with_context(|| {
            format!("{} is damaged; delete it to make a new one", path.display())
        })?;
        if token.ca == pki.fingerprint() {
            return Ok(token);
        }
    }
    let token = vgrid_pki::JoinToken::generate(pki.fingerprint())?;
    write_file(&path, &token.to_string())?;
    Ok(token)
}

/// Writes a file of vgrid's state, readable by vgrid only like the rest.
fn write_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{text}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
