//! `agentctl audit`: check the audit trail.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Check that no record of an audit file was edited, removed or
    /// reordered, and print where its chain ends: compare that with a copy
    /// kept elsewhere (the `audit` log target) to detect a shortened file.
    Verify {
        /// The audit file. Default `<data-dir>/audit/decisions.jsonl`, the
        /// local Orbit's.
        file: Option<PathBuf>,
    },
}

pub(crate) fn run(data_dir: &Path, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { file } => {
            let path = file.unwrap_or_else(|| data_dir.join("audit").join("decisions.jsonl"));
            let reader = std::fs::File::open(&path)
                .map(std::io::BufReader::new)
                .with_context(|| format!("opening the audit file `{}`", path.display()))?;
            match governance::audit::verify(reader) {
                Ok(report) => {
                    println!(
                        "ok: {} records, the chain ends at seq {} {}",
                        report.records, report.last.seq, report.last.hash
                    );
                    Ok(())
                }
                Err(error) => bail!("`{}` does not verify: {error}", path.display()),
            }
        }
    }
}
