//! Where policy text comes from.

use std::path::{Path, PathBuf};

use crate::GovernanceError;
use crate::policies::PolicyDocument;

/// A source of policy documents (embedded: a directory; AWS: DynamoDB).
pub trait PolicySource: Send + Sync {
    /// Every policy document, sorted by name.
    fn load(&self) -> Result<Vec<PolicyDocument>, GovernanceError>;
    /// Where the policies come from, for messages.
    fn describe(&self) -> String;
}

/// Every `*.cedar` file in a directory.
#[derive(Debug, Clone)]
pub struct LocalPolicyDir {
    dir: PathBuf,
}

impl LocalPolicyDir {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// Writes `documents` into `dir` unless it already holds policies, so an
    /// operator's edits are never overwritten. Returns whether it wrote.
    pub fn seed(dir: &Path, documents: &[(&str, &str)]) -> std::io::Result<bool> {
        std::fs::create_dir_all(dir)?;
        let has_policies = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "cedar"));
        if has_policies {
            return Ok(false);
        }
        for (name, text) in documents {
            std::fs::write(dir.join(name), text)?;
        }
        Ok(true)
    }
}

impl PolicySource for LocalPolicyDir {
    fn load(&self) -> Result<Vec<PolicyDocument>, GovernanceError> {
        let unavailable = |reason: String| GovernanceError::SourceUnavailable {
            source_name: self.describe(),
            reason,
        };
        let mut documents = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| unavailable(e.to_string()))?;
        for entry in entries {
            let path = entry.map_err(|e| unavailable(e.to_string()))?.path();
            if path.extension().is_none_or(|x| x != "cedar") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| unavailable(format!("`{}`: {e}", path.display())))?;
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            documents.push(PolicyDocument { name, text });
        }
        documents.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(documents)
    }

    fn describe(&self) -> String {
        format!("`{}`", self.dir.display())
    }
}
