//! `agentctl keys`: issue, list and revoke access keys in the local keyring.

use std::path::Path;

use anyhow::Context;
use auth::keyring::Identity;
use auth::{LocalKeyring, PrincipalKind};
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Issue a key for a principal (at most two active keys each, so keys
    /// rotate with overlap). Prints it in AWS credentials-file format.
    Create {
        /// The principal's id, e.g. `alice`.
        #[arg(long)]
        principal: String,
        /// Groups the principal belongs to, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// The principal's tenant.
        #[arg(long, default_value = "local")]
        tenant: String,
        /// The principal is a service rather than a person.
        #[arg(long)]
        service: bool,
        /// Also write the key to the stack's credentials file under this profile.
        #[arg(long)]
        profile: Option<String>,
    },
    /// List keys (secrets are not shown).
    List,
    /// Revoke a key: it stops verifying within seconds, without a restart.
    Revoke {
        /// The access key id.
        access_key_id: String,
    },
}

pub(crate) fn run(data_dir: &Path, command: KeysCommand) -> anyhow::Result<()> {
    let keyring = LocalKeyring::open(&data_dir.join("keys.json"))?;
    match command {
        KeysCommand::Create {
            principal,
            groups,
            tenant,
            service,
            profile,
        } => {
            let key = keyring.create_key(Identity {
                principal,
                kind: if service {
                    PrincipalKind::Service
                } else {
                    PrincipalKind::User
                },
                groups,
                tenant,
            })?;
            let profile_name = profile
                .clone()
                .unwrap_or_else(|| key.identity.principal.clone());
            println!(
                "[{profile_name}]\naws_access_key_id = {}\naws_secret_access_key = {}",
                key.access_key_id, key.secret_access_key
            );
            if let Some(profile) = profile {
                let path = data_dir.join("credentials");
                auth::credentials::write_profile(
                    &path,
                    &profile,
                    &key.access_key_id,
                    &key.secret_access_key,
                )
                .with_context(|| format!("writing `{}`", path.display()))?;
                eprintln!("written to `{}` as profile `{profile}`", path.display());
            }
        }
        KeysCommand::List => {
            for key in keyring.list()? {
                println!(
                    "{}  {:<12} {:<8} tenant={:<10} groups={:<24} {}{}",
                    key.access_key_id,
                    key.identity.principal,
                    format!("{:?}", key.identity.kind).to_lowercase(),
                    key.identity.tenant,
                    key.identity.groups.join(","),
                    key.created_at,
                    if key.revoked { "  REVOKED" } else { "" }
                );
            }
        }
        KeysCommand::Revoke { access_key_id } => {
            keyring.revoke(&access_key_id)?;
            println!("revoked {access_key_id}");
        }
    }
    Ok(())
}
