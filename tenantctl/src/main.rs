//! `tenantctl`: manage API keys in the tenant registry.
//!
//! The plaintext of a minted key is printed once and never stored; the
//! registry gets its SHA-256 digest. A running gateway picks the change up
//! when the registry is re-delivered (see README, "Registry changes").

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Manage tenant API keys in the gateway registry")]
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
}

fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<(), String> {
    let text = std::fs::read_to_string(&cli.registry)
        .map_err(|e| format!("{}: {e}", cli.registry.display()))?;
    match cli.command {
        Command::MintKey {
            tenant,
            id,
            expires_at,
        } => {
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
            let out = tenantctl::revoke_key(&text, &tenant, &id).map_err(|e| e.to_string())?;
            write_atomically(&cli.registry, &out)?;
            eprintln!("revoked key {id:?} of tenant {tenant:?}");
        }
        Command::Check => {
            let reg = tenantctl::check(&text).map_err(|e| e.to_string())?;
            println!(
                "ok: {} tenants, {} models",
                reg.tenants().len(),
                reg.config().models.len()
            );
        }
        Command::List => {
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
