//! `idweb`: inspect the token cache of an idweb store.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use idweb::CacheKeys;
use idweb_cli::{Filter, error_chain, evict, list, open_store_url, stats};

#[derive(Parser, Debug)]
#[command(
    name = "idweb",
    version,
    about = "Inspect the token cache of an idweb store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The token cache.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// List sessions and their cache entries (never secrets). Needs IDWEB_CACHE_KEYS to read entries.
    List {
        /// The store, e.g. sqlite://idweb.sqlite (default: IDWEB_STORE).
        #[arg(long, env = "IDWEB_STORE")]
        store: String,
        /// Only sessions of this subject.
        #[arg(long)]
        sub: Option<String>,
        /// Only sessions of this provider session id.
        #[arg(long)]
        sid: Option<String>,
        /// Only sessions of this issuer (makes --sub/--sid use the store's indexes).
        #[arg(long)]
        iss: Option<String>,
        /// Print JSON (stable format, see docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
    /// Sign out sessions: every session of --sub, or of the provider session --sid, with all their tokens.
    Evict {
        /// The store, e.g. sqlite://idweb.sqlite (default: IDWEB_STORE).
        #[arg(long, env = "IDWEB_STORE")]
        store: String,
        /// Every session of this subject.
        #[arg(long, conflicts_with = "sid", required_unless_present = "sid")]
        sub: Option<String>,
        /// Every session of this provider session id.
        #[arg(long)]
        sid: Option<String>,
        /// Only this issuer (default: every issuer with matching sessions).
        #[arg(long)]
        iss: Option<String>,
        /// How long the tombstone refuses the sessions' return, in seconds.
        #[arg(long, default_value_t = 86_400)]
        tombstone_ttl: u64,
        /// Print JSON (stable format, see docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
    /// Count sessions, partitions, entries and tombstones.
    Stats {
        /// The store, e.g. sqlite://idweb.sqlite (default: IDWEB_STORE).
        #[arg(long, env = "IDWEB_STORE")]
        store: String,
        /// Print JSON (stable format, see docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn fmt_time(t: Option<i64>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Cache(CacheCommand::List {
            store,
            sub,
            sid,
            iss,
            json,
        }) => {
            let keys = std::env::var("IDWEB_CACHE_KEYS")
                .map_err(|_| "IDWEB_CACHE_KEYS is not set: the cache entries cannot be read without the app's keys".to_string())
                .and_then(|v| CacheKeys::parse(&v).map_err(|e| format!("IDWEB_CACHE_KEYS: {e}")))?;
            let store = open_store_url(&store).await?;
            let reports = list(store, Arc::new(keys), &Filter { iss, sub, sid })
                .await
                .map_err(|e| error_chain(&e))?;
            if json {
                let doc = serde_json::json!({ "sessions": reports });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            if reports.is_empty() {
                println!("no sessions");
            }
            for r in reports {
                println!(
                    "session #{}  sub={}  sid={}  iss={}  expires_at={}",
                    r.session,
                    r.sub,
                    r.sid.as_deref().unwrap_or("-"),
                    r.iss,
                    r.expires_at
                );
                for e in &r.entries {
                    println!(
                        "  {:<12} expires_at={:<10} scopes={}",
                        e.kind,
                        fmt_time(e.expires_at),
                        e.scopes.as_deref().unwrap_or("-")
                    );
                }
                if r.unreadable_entries > 0 {
                    println!(
                        "  ({} entries cannot be decrypted with these keys)",
                        r.unreadable_entries
                    );
                }
            }
            Ok(())
        }
        Command::Cache(CacheCommand::Evict {
            store,
            sub,
            sid,
            iss,
            tombstone_ttl,
            json,
        }) => {
            let store = open_store_url(&store).await?;
            let report = evict(
                store,
                &Filter { iss, sub, sid },
                std::time::Duration::from_secs(tombstone_ttl),
            )
            .await
            .map_err(|e| error_chain(&e))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else {
                println!("signed out {} session(s)", report.sessions_removed);
                for s in &report.selectors {
                    println!("  tombstoned {s}");
                }
            }
            Ok(())
        }
        Command::Cache(CacheCommand::Stats { store, json }) => {
            let store = open_store_url(&store).await?;
            let s = stats(store.as_ref()).await.map_err(|e| error_chain(&e))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
                );
            } else {
                println!(
                    "sessions: {}\npartitions: {}\nentries: {}\ntombstones: {}",
                    s.sessions, s.partitions, s.entries, s.tombstones
                );
            }
            Ok(())
        }
    }
}
