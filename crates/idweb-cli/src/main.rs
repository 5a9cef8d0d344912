//! `idweb`: inspect the token cache of an idweb store, and move it to and
//! from MSAL's token cache format.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use idweb::CacheKeys;
use idweb_cli::{
    Filter, RemoveAccountOptions, error_chain, evict_announce_and_audit, export_msal, import_msal,
    list, open_sign_out_bus_url, open_store_url, read_msal_document, remove_account, stats,
    write_private_file,
};

#[derive(Parser, Debug)]
#[command(
    name = "idweb",
    version,
    about = "Inspect the token cache of an idweb store, and move it to and from MSAL"
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

/// A token cache document format.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    /// MSAL's unified schema, as MSAL Python's SerializableTokenCache serializes it.
    Msal,
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
    /// Write a provider session's token cache as an MSAL token cache document: it holds the tokens.
    ///
    /// THE DOCUMENT HOLDS THE TOKENS THEMSELVES (access, refresh and ID tokens),
    /// in clear: whoever reads it can act as the user. Prefer --out, which
    /// creates the file readable by you only (mode 0600); standard output may
    /// end up in a terminal's scrollback or a log. Needs IDWEB_CACHE_KEYS.
    Export {
        /// The document format.
        #[arg(long, value_enum)]
        format: Format,
        /// The provider session id (`sid`) whose sessions are exported.
        #[arg(long)]
        sid: String,
        /// Only this issuer (uses the store's index).
        #[arg(long)]
        iss: Option<String>,
        /// The store, e.g. sqlite://idweb.sqlite (default: IDWEB_STORE).
        #[arg(long, env = "IDWEB_STORE")]
        store: String,
        /// Write to this file (created with mode 0600, replacing an existing
        /// one) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Write the entries of an MSAL token cache document into a session's token cache.
    ///
    /// The provider session must match exactly one live session. Entries
    /// replace those with the same cache key; others stay. Entries are
    /// encrypted with the first key of IDWEB_CACHE_KEYS. Refused, writing
    /// nothing: documents over 1 MiB, malformed ones (the error names the
    /// entry), and entries of another account or provider than the session's.
    Import {
        /// The document format.
        #[arg(long, value_enum)]
        format: Format,
        /// The provider session id (`sid`) of the session to import into.
        #[arg(long)]
        sid: String,
        /// Only this issuer (uses the store's index).
        #[arg(long)]
        iss: Option<String>,
        /// The store, e.g. sqlite://idweb.sqlite (default: IDWEB_STORE).
        #[arg(long, env = "IDWEB_STORE")]
        store: String,
        /// Print JSON (stable format, see docs/CLI.md).
        #[arg(long)]
        json: bool,
        /// The document (`-`: standard input).
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Remove an account's tokens from the token cache, as MSAL's remove_account does.
    ///
    /// Removes the account's refresh tokens of this app (or of its family),
    /// access tokens, ID tokens and Account entries, in every realm; app
    /// metadata stays. The sessions stay signed in (to sign out, use evict).
    /// Needs IDWEB_CACHE_KEYS.
    RemoveAccount {
        /// The provider session id (`sid`) whose sessions are changed.
        #[arg(long)]
        sid: String,
        /// Only this issuer (uses the store's index).
        #[arg(long)]
        iss: Option<String>,
        /// The store, e.g. sqlite://idweb.sqlite (default: IDWEB_STORE).
        #[arg(long, env = "IDWEB_STORE")]
        store: String,
        /// The account's home_account_id (default: the session's account).
        #[arg(long, value_name = "HOME_ACCOUNT_ID")]
        account: Option<String>,
        /// The account's environment (default: the host of the session's issuer).
        #[arg(long)]
        environment: Option<String>,
        /// The app removing it, for MSAL's refresh-token ownership check
        /// (default: the one client the session's entries are of).
        #[arg(long)]
        client_id: Option<String>,
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

/// The audit trail of `cache evict`: its events (target `idweb::audit`)
/// go to standard error. Keyed with the app's cookie key when
/// `IDWEB_COOKIE_KEY` is set, so that its fingerprints of `sub` and `sid`
/// match the app's; otherwise with a random key.
fn cli_audit() -> idweb::SignOutAudit {
    use base64::Engine;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("idweb::audit=info"))
        .try_init();
    let key = std::env::var("IDWEB_COOKIE_KEY")
        .ok()
        .and_then(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k.trim())
                .ok()
        })
        .filter(|k| !k.is_empty());
    let key = match key {
        Some(k) => k,
        None => {
            eprintln!(
                "note: IDWEB_COOKIE_KEY is not set: the audit event's fingerprints will not match the app's"
            );
            idweb::SessionId::generate().secret().as_bytes().to_vec()
        }
    };
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    idweb::SignOutAudit::new(&key, format!("idweb-cli@{host}"))
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

/// The app's cache keys, from IDWEB_CACHE_KEYS.
fn cache_keys() -> Result<CacheKeys, String> {
    std::env::var("IDWEB_CACHE_KEYS")
        .map_err(|_| {
            "IDWEB_CACHE_KEYS is not set: the cache entries cannot be read without the app's keys"
                .to_string()
        })
        .and_then(|v| CacheKeys::parse(&v).map_err(|e| format!("IDWEB_CACHE_KEYS: {e}")))
}

fn print_json(value: &impl serde::Serialize) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).map_err(|e| e.to_string())?
    );
    Ok(())
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
            let keys = cache_keys()?;
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
            let bus = open_sign_out_bus_url(&store).await?;
            let store = open_store_url(&store).await?;
            let audit = cli_audit();
            let report = evict_announce_and_audit(
                store,
                bus,
                &Filter { iss, sub, sid },
                std::time::Duration::from_secs(tombstone_ttl),
                &audit,
            )
            .await
            .map_err(|e| error_chain(&e))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else {
                println!(
                    "signed out {} session(s), {} cache entr{}",
                    report.sessions_removed,
                    report.entries_removed,
                    if report.entries_removed == 1 {
                        "y"
                    } else {
                        "ies"
                    }
                );
                for s in &report.selectors {
                    println!("  tombstoned {s}");
                }
                if report.events_published > 0 {
                    println!(
                        "  told the app's instances ({} sign-out event(s) published)",
                        report.events_published
                    );
                }
            }
            Ok(())
        }
        Command::Cache(CacheCommand::Export {
            format: Format::Msal,
            sid,
            iss,
            store,
            out,
        }) => {
            let keys = cache_keys()?;
            let store = open_store_url(&store).await?;
            let filter = Filter {
                iss,
                sub: None,
                sid: Some(sid),
            };
            let export = export_msal(store, Arc::new(keys), &filter)
                .await
                .map_err(|e| error_chain(&e))?;
            // Four-space indentation, as MSAL's serialize() writes it.
            let mut text = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut text, formatter);
            serde::Serialize::serialize(&export.document, &mut ser).map_err(|e| e.to_string())?;
            text.push(b'\n');
            match out {
                Some(path) => {
                    write_private_file(&path, &text)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    println!(
                        "exported {} entries of {} session(s) to {} (mode 0600; it holds tokens)",
                        export.entries,
                        export.sessions,
                        path.display()
                    );
                }
                None => {
                    use std::io::Write as _;
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(&text)
                        .and_then(|()| stdout.flush())
                        .map_err(|e| format!("cannot write the document: {e}"))?;
                }
            }
            Ok(())
        }
        Command::Cache(CacheCommand::Import {
            format: Format::Msal,
            sid,
            iss,
            store,
            json,
            file,
        }) => {
            let keys = cache_keys()?;
            let document = read_msal_document(&file).map_err(|e| error_chain(&e))?;
            let store = open_store_url(&store).await?;
            let filter = Filter {
                iss,
                sub: None,
                sid: Some(sid),
            };
            let report = import_msal(store, Arc::new(keys), &filter, &file, &document)
                .await
                .map_err(|e| error_chain(&e))?;
            if json {
                return print_json(&report);
            }
            println!(
                "imported {} entries into session #{}",
                report.entries_written, report.session
            );
            Ok(())
        }
        Command::Cache(CacheCommand::RemoveAccount {
            sid,
            iss,
            store,
            account,
            environment,
            client_id,
            json,
        }) => {
            let keys = cache_keys()?;
            let store = open_store_url(&store).await?;
            let filter = Filter {
                iss,
                sub: None,
                sid: Some(sid),
            };
            let options = RemoveAccountOptions {
                home_account_id: account,
                environment,
                client_id,
            };
            let reports = remove_account(store, Arc::new(keys), &filter, &options)
                .await
                .map_err(|e| error_chain(&e))?;
            if json {
                return print_json(&serde_json::json!({ "sessions": reports }));
            }
            for r in &reports {
                println!(
                    "session #{}: removed {} entries of account {} ({})",
                    r.session,
                    r.entries_removed.len(),
                    r.home_account_id,
                    r.environment
                );
                for e in &r.entries_removed {
                    println!("  {:<12} {}", e.kind, e.cache_key);
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
