//! `idweb-demo`: with no arguments, starts the development identity provider,
//! the sample web app and the sample todo API on 127.0.0.1 and prints their
//! URLs; `idweb-demo webapp` runs only the sample web app, configured by the
//! `IDWEB_*` variables (or `--config FILE`), against any OpenID Provider.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use idweb::Settings;
use idweb_axum::IdWeb;
use idweb_devidp::{DevClient, DevIdp, DevIdpConfig, EntraProfile};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument as _;

#[derive(Parser, Debug)]
#[command(
    name = "idweb-demo",
    version,
    about = "idweb's demo: a dev identity provider, a sample web app and a sample API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address of the development identity provider.
    #[arg(long, default_value = "127.0.0.1:5100")]
    idp_listen: SocketAddr,
    /// Address of the sample web app "App A" (public URL http://127.0.0.1:PORT).
    #[arg(long, default_value = "127.0.0.1:5000")]
    app_listen: SocketAddr,
    /// Address of the sample web app "App B" (public URL http://localhost:PORT).
    #[arg(long, default_value = "127.0.0.1:5001")]
    app_b_listen: SocketAddr,
    /// Address of the sample todo API.
    #[arg(long, default_value = "127.0.0.1:5200")]
    api_listen: SocketAddr,
    /// Address of the control room (both apps, the provider and every
    /// sign-out on one page).
    #[arg(long, default_value = "127.0.0.1:5300")]
    control_listen: SocketAddr,
    /// Folder for the sample web app's SQLite store and its generated keys.
    #[arg(long, default_value = ".idweb-demo")]
    data_dir: PathBuf,
    /// What the development identity provider looks like: `standard`, or
    /// `entra` (Microsoft Entra ID's shapes: the apps and the API use the
    /// multi-tenant `organizations` authority, alice and bob are in two
    /// tenants, front-channel logout carries only `sid`, no back-channel).
    #[arg(long, value_enum, default_value = "standard")]
    idp_profile: IdpProfile,
}

/// The development identity provider's profile.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum IdpProfile {
    /// A plain OpenID Provider.
    Standard,
    /// Microsoft Entra ID's shapes (multi-tenant).
    Entra,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run only the sample web app, configured by IDWEB_* variables.
    Webapp {
        /// A TOML configuration file (IDWEB_* variables override it).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,idweb=info".into()),
        )
        // Colours only for a terminal, not in a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Before the apps are built: idweb registers its metrics then.
        idweb_demo::metrics::install_from_env()?;
        match cli.command {
            Some(Command::Webapp { config }) => run_webapp(config).await,
            None => {
                run_all(
                    cli.idp_listen,
                    cli.app_listen,
                    cli.app_b_listen,
                    cli.api_listen,
                    cli.control_listen,
                    cli.data_dir,
                    cli.idp_profile,
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Prints a line to stdout; a closed stdout (a pipe whose reader went away)
/// is not a reason to crash a server.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The scopes of the sample todo API.
const TODO_SCOPES: &str = "api://todo/todos.read api://todo/todos.write";

/// Resolves when Ctrl-C (or SIGTERM on Unix) arrives.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn serve(
    listener: TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    // Header-read, idle and body timeouts and a connection limit (the defaults).
    // `GET /metrics` with IDWEB_METRICS=true.
    let app = idweb_demo::metrics::route(app);
    idweb_axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

async fn run_webapp(config: Option<PathBuf>) -> Result<(), BoxError> {
    let settings = Settings::load(config.as_deref())?;
    let listen = settings.listen;
    let public = settings.public_url.clone();
    let idweb = IdWeb::builder(settings).build().await?;
    let listener = TcpListener::bind(listen).await?;
    say!("sample web app: {public} (listening on {listen})");
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(serve(
        listener,
        idweb_demo::webapp::router(&idweb, "idweb sample app"),
        rx,
    ));
    shutdown_signal().await;
    let _ = tx.send(true);
    server.await??;
    say!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for the {what}: {e}").into())
}

/// Reads the demo's keys from `dir/keys.env`, generating them on first use
/// (readable by the owner only), so that sessions and cached tokens survive
/// a restart of the demo.
fn demo_keys(dir: &std::path::Path) -> Result<(String, String), BoxError> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let path = dir.join("keys.env");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        if let (Some(cookie), Some(cache)) = (get("IDWEB_COOKIE_KEY"), get("IDWEB_CACHE_KEYS")) {
            return Ok((cookie, cache));
        }
    }
    let mut cookie = [0u8; 64];
    let mut cache = [0u8; 32];
    aws_lc_rs::rand::fill(&mut cookie).map_err(|_| "the system random number generator failed")?;
    aws_lc_rs::rand::fill(&mut cache).map_err(|_| "the system random number generator failed")?;
    let (cookie, cache) = (
        STANDARD.encode(cookie),
        format!("demo1:{}", STANDARD.encode(cache)),
    );
    std::fs::create_dir_all(dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    std::io::Write::write_all(
        &mut file,
        format!("IDWEB_COOKIE_KEY={cookie}\nIDWEB_CACHE_KEYS={cache}\n").as_bytes(),
    )?;
    say!(
        "generated the demo's cookie and cache keys in {}",
        path.display()
    );
    Ok((cookie, cache))
}

/// One of the demo's sample web apps.
struct DemoApp {
    name: &'static str,
    client_id: &'static str,
    listener: TcpListener,
    url: String,
    secret: String,
}

impl DemoApp {
    /// Binds `addr`; the public URL uses `host` (App A and App B use
    /// different host names so that their cookies stay apart).
    async fn bind(
        name: &'static str,
        client_id: &'static str,
        addr: SocketAddr,
        host: &str,
    ) -> Result<Self, BoxError> {
        let listener = bind(addr, name).await?;
        let url = format!("http://{host}:{}", listener.local_addr()?.port());
        Ok(Self {
            name,
            client_id,
            listener,
            url,
            secret: random_secret()?,
        })
    }

    fn client(&self) -> DevClient {
        let mut client = DevClient::new(
            self.client_id,
            self.secret.as_str(),
            format!("{}/signin-oidc", self.url),
        );
        client.post_logout_redirect_uris = vec![format!("{}/signout-callback-oidc", self.url)];
        client
    }

    async fn start(
        self,
        issuer: &str,
        data_dir: &std::path::Path,
        api_url: &str,
        links: Vec<(String, String)>,
        stop: watch::Receiver<bool>,
    ) -> Result<(IdWeb, tokio::task::JoinHandle<Result<(), BoxError>>), BoxError> {
        let (cookie_key, cache_keys) = demo_keys(&data_dir.join(self.client_id))?;
        // IDWEB_STORE (e.g. redis://127.0.0.1:6379 or
        // postgres://postgres@127.0.0.1:5432/postgres) puts both apps on one
        // shared store, each under its own key prefix (Redis) or schema
        // (PostgreSQL); the default is a SQLite file per app.
        let store_url = std::env::var("IDWEB_STORE").unwrap_or_else(|_| {
            format!(
                "sqlite://{}",
                data_dir
                    .join(format!("{}.sqlite", self.client_id))
                    .display()
            )
        });
        let prefix = format!("idweb-{}", self.client_id);
        let settings = Settings::from_sources(
            None,
            [
                ("IDWEB_AUTHORITY", issuer.to_string()),
                ("IDWEB_CLIENT_ID", self.client_id.to_string()),
                ("IDWEB_CLIENT_SECRET", self.secret),
                ("IDWEB_PUBLIC_URL", self.url.clone()),
                (
                    "IDWEB_SCOPES",
                    format!("openid profile offline_access {TODO_SCOPES}"),
                ),
                ("IDWEB_STORE", store_url.clone()),
                ("IDWEB_COOKIE_KEY", cookie_key),
                ("IDWEB_CACHE_KEYS", cache_keys),
                ("IDWEB_DOWNSTREAM__TODO__BASE_URL", api_url.to_string()),
                ("IDWEB_DOWNSTREAM__TODO__SCOPES", TODO_SCOPES.to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .into_iter()
            .chain(
                store_url
                    .starts_with("redis")
                    .then(|| ("IDWEB_STORE_PREFIX".to_string(), prefix)),
            )
            .chain(store_url.starts_with("postgres").then(|| {
                (
                    "IDWEB_STORE_SCHEMA".to_string(),
                    format!("idweb_{}", self.client_id.replace('-', "_")),
                )
            })),
        )?;
        // Every log line of this app names it.
        let span = tracing::info_span!("demo", app = %self.name);
        let idweb = IdWeb::builder(settings)
            .build()
            .instrument(span.clone())
            .await?;
        let app = idweb_demo::webapp::router_with_links(&idweb, self.name, links);
        let server = tokio::spawn(serve(self.listener, in_span(app, span), stop));
        Ok((idweb, server))
    }
}

/// `router` with every request handled inside `span`, so that the log
/// lines written for it say which part of the demo wrote them.
fn in_span(router: axum::Router, span: tracing::Span) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            next.run(req).instrument(span.clone())
        },
    ))
}

#[allow(clippy::too_many_arguments)]
async fn run_all(
    idp_listen: SocketAddr,
    app_listen: SocketAddr,
    app_b_listen: SocketAddr,
    api_listen: SocketAddr,
    control_listen: SocketAddr,
    data_dir: PathBuf,
    profile: IdpProfile,
) -> Result<(), BoxError> {
    // Bind everything first, so that port 0 works and the URLs are known.
    let idp_listener = bind(idp_listen, "identity provider").await?;
    let app_a = DemoApp::bind("App A", "app-a", app_listen, "127.0.0.1").await?;
    let app_b = DemoApp::bind("App B", "app-b", app_b_listen, "localhost").await?;
    let api_listener = bind(api_listen, "todo API").await?;
    let api_url = format!("http://{}", api_listener.local_addr()?);
    let control_listener = bind(control_listen, "control room").await?;
    let control_url = format!("http://{}", control_listener.local_addr()?);
    let links = vec![("Control room".to_string(), format!("{control_url}/"))];

    // App A hears of sign-outs by back-channel, App B by front-channel.
    let client_a = app_a
        .client()
        .with_backchannel_logout(format!("{}/backchannel-logout", app_a.url));
    let client_b = app_b
        .client()
        .with_frontchannel_logout(format!("{}/signout-oidc", app_b.url));
    let idp = DevIdp::start_on(
        idp_listener,
        DevIdpConfig {
            clients: vec![client_a, client_b],
            entra: (profile == IdpProfile::Entra).then(EntraProfile::default),
            // Its keys and sessions survive a restart, as the apps' do.
            state_file: Some(data_dir.join("idp-state.json")),
            nav_links: vec![
                ("App A".to_string(), format!("{}/", app_a.url)),
                ("App B".to_string(), format!("{}/", app_b.url)),
                links[0].clone(),
            ],
            ..DevIdpConfig::default()
        },
    )
    .await
    .map_err(|e| format!("cannot start the development identity provider: {e}"))?;

    let authority = match profile {
        IdpProfile::Standard => idp.issuer().to_string(),
        IdpProfile::Entra => idp.entra_authority("organizations"),
    };
    let (tx, rx) = watch::channel(false);
    let (url_a, url_b) = (app_a.url.clone(), app_b.url.clone());
    let (idweb_a, a) = app_a
        .start(&authority, &data_dir, &api_url, links.clone(), rx.clone())
        .await?;
    let (idweb_b, b) = app_b
        .start(&authority, &data_dir, &api_url, links.clone(), rx.clone())
        .await?;
    let api_router =
        idweb_demo::todo_api::router(idweb_demo::todo_api::TodoApiConfig::new(&authority)).await?;
    let api = tokio::spawn(serve(
        api_listener,
        in_span(api_router, tracing::info_span!("demo", app = %"todo API")),
        rx.clone(),
    ));
    let control = idweb_demo::control::ControlRoom::new(
        idp.clone(),
        vec![
            idweb_demo::control::ControlApp {
                name: "App A".into(),
                url: url_a.clone(),
                told_by: "back-channel logout".into(),
                idweb: idweb_a,
            },
            idweb_demo::control::ControlApp {
                name: "App B".into(),
                url: url_b.clone(),
                told_by: "front-channel logout".into(),
                idweb: idweb_b,
            },
        ],
        &["alice", "bob"],
    );
    let control_server = tokio::spawn(serve(
        control_listener,
        in_span(
            control.router(),
            tracing::info_span!("demo", app = %"control room"),
        ),
        rx,
    ));

    say!("idweb demo is running:");
    say!(
        "  identity provider: {}  (development only; users: alice, bob)",
        idp.issuer()
    );
    if profile == IdpProfile::Entra {
        say!("  profile:           Entra-like; authority {authority}");
    }
    say!("  App A:             {url_a}/  (back-channel logout)");
    say!("  App B:             {url_b}/  (front-channel logout)");
    say!("  todo API:          {api_url}/api/todos");
    say!("  control room:      {control_url}/  (both apps and every sign-out on one page)");
    say!("  stores:            {}", data_dir.display());
    say!(
        "  sign out everywhere at the provider: {}/admin/end-sessions",
        idp.issuer()
    );
    say!("Open {url_a}/profile to sign in. Press Ctrl-C to stop.");

    shutdown_signal().await;
    say!("shutting down");
    let _ = tx.send(true);
    a.await??;
    b.await??;
    api.await??;
    control_server.await??;
    idp.shutdown().await;
    say!("stopped");
    Ok(())
}

fn random_secret() -> Result<String, BoxError> {
    use std::fmt::Write;
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "the system random number generator failed")?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}
