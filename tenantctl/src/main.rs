//! `tenantctl`: manage API keys in the tenant registry, and export usage
//! for billing.
//!
//! The plaintext of a minted key is printed once and never stored; the
//! registry gets its SHA-256 digest. A running gateway picks the change up
//! when the registry is re-delivered (see README, "Registry changes").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Manage tenant API keys in the gateway registry; export usage for billing"
)]
struct Cli {
    /// Registry file (TOML).
    #[arg(long, short, env = "GATEWAY_REGISTRY", default_value = "registry.toml")]
    registry: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mint a key for a tenant; prints the key once.
    MintKey {
        #[arg(long)]
        tenant: String,
        /// Key id (a non-secret handle); default key-N.
        #[arg(long)]
        id: Option<String>,
        /// RFC 3339 expiry, e.g. 2027-01-01T00:00:00Z.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Revoke a tenant's key by id.
    RevokeKey {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
    },
    /// Validate the registry (fields, references, JWT keys).
    Check,
    /// List tenants and key ids (never secrets).
    List,
    /// Billing data from one ratelimit-service replica's admin API (each
    /// replica keeps its own ledger: export from every one).
    Usage {
        /// Admin API base URL.
        #[arg(
            long,
            env = "RATELIMIT_ADMIN_URL",
            default_value = "http://127.0.0.1:9090"
        )]
        admin_url: String,
        /// Environment variable that holds the admin token (never a flag:
        /// flags show in `ps`).
        #[arg(long, default_value = "ADMIN_TOKEN")]
        token_env: String,
        #[command(subcommand)]
        what: UsageCommand,
    },
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Settled charges as JSON lines, CSV or CloudEvents, to stdout.
    Export {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// Inclusive start: YYYY-MM-DD (UTC) or RFC 3339.
        #[arg(long)]
        from: Option<String>,
        /// Exclusive end: YYYY-MM-DD (UTC) or RFC 3339.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_parser = ["jsonl", "csv", "cloudevents"], default_value = "jsonl")]
        format: String,
        /// Resume from the cursor in this file and keep it current, so the
        /// next run exports only what is new.
        #[arg(long)]
        cursor_file: Option<PathBuf>,
        /// Records per request (1 to 100000).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        page_size: u32,
    },
    /// One tenant's invoice for a month, per model, to stdout.
    Invoice {
        #[arg(long)]
        tenant: String,
        /// YYYY-MM (UTC).
        #[arg(long)]
        month: String,
        #[arg(long, value_parser = ["json", "csv"], default_value = "json")]
        format: String,
        /// CSV rows per month and model, or per day and model.
        #[arg(long, value_parser = ["month", "day"], default_value = "month")]
        by: String,
    },
}

fn usage(admin_url: &str, token_env: &str, what: UsageCommand) -> Result<(), String> {
    let token = std::env::var(token_env).ok().filter(|t| !t.is_empty());
    let api = tenantctl::usage::AdminApi::new(admin_url, token);
    match what {
        UsageCommand::Export {
            tenant,
            model,
            from,
            to,
            format,
            cursor_file,
            page_size,
        } => {
            let query = tenantctl::usage::ExportQuery {
                tenant,
                model,
                from,
                to,
                format,
                page_size: page_size as usize,
            };
            let n = api
                .export(
                    &query,
                    cursor_file.as_deref(),
                    &mut std::io::stdout().lock(),
                )
                .map_err(|e| e.to_string())?;
            eprintln!("exported {n} records");
        }
        UsageCommand::Invoice {
            tenant,
            month,
            format,
            by,
        } => {
            let body = api
                .invoice(&tenant, &month, &format, &by)
                .map_err(|e| e.to_string())?;
            print!("{body}");
        }
    }
    Ok(())
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<(), String> {
    let read_registry = || {
        std::fs::read_to_string(&cli.registry)
            .map_err(|e| format!("{}: {e}", cli.registry.display()))
    };
    match cli.command {
        Command::MintKey {
            tenant,
            id,
            expires_at,
        } => {
            let text = read_registry()?;
            let (out, key) =
                tenantctl::mint_key(&text, &tenant, id.as_deref(), expires_at.as_deref())
                    .map_err(|e| e.to_string())?;
            write_atomically(&cli.registry, &out)?;
            eprintln!(
                "minted key {:?} for tenant {tenant:?}; it is shown once:",
                key.id
            );
            println!("{}", key.plaintext);
        }
        Command::RevokeKey { tenant, id } => {
            let text = read_registry()?;
            let out = tenantctl::revoke_key(&text, &tenant, &id).map_err(|e| e.to_string())?;
            write_atomically(&cli.registry, &out)?;
            eprintln!("revoked key {id:?} of tenant {tenant:?}");
        }
        Command::Check => {
            let text = read_registry()?;
            let reg = tenantctl::check(&text).map_err(|e| e.to_string())?;
            println!(
                "ok: {} tenants, {} models",
                reg.tenants().len(),
                reg.config().models.len()
            );
        }
        Command::List => {
            let text = read_registry()?;
            let reg = tenantctl::check(&text).map_err(|e| e.to_string())?;
            for t in reg.tenants() {
                let keys: Vec<String> = t
                    .api_keys
                    .iter()
                    .map(|k| {
                        if k.revoked {
                            format!("{} (revoked)", k.id)
                        } else {
                            k.id.clone()
                        }
                    })
                    .collect();
                println!(
                    "{}\ttier={}\tkeys=[{}]{}",
                    t.id,
                    t.tier,
                    keys.join(", "),
                    if t.disabled { "\tDISABLED" } else { "" }
                );
            }
        }
        Command::Usage {
            admin_url,
            token_env,
            what,
        } => usage(&admin_url, &token_env, what)?,
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenantctl: {e}");
            ExitCode::FAILURE
        }
    }
}
