//! Policy documents on disk: what governance owners edit, validate, test and
//! `agentctl policy put` stores as a new version.

use std::path::Path;

use crate::GovernanceError;
use crate::policies::PolicyDocument;

/// The documents at `path`: every `*.cedar` file directly in a directory
/// (sorted by name), or one `.cedar` file.
pub fn read_policies(path: &Path) -> Result<Vec<PolicyDocument>, GovernanceError> {
    let unreadable = |what: &Path, e: std::io::Error| {
        GovernanceError::Unreadable(format!("`{}`: {e}", what.display()))
    };
    let metadata = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
    let paths = if metadata.is_dir() {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| unreadable(path, e))? {
            let entry = entry.map_err(|e| unreadable(path, e))?.path();
            if entry.extension().is_some_and(|x| x == "cedar") && entry.is_file() {
                paths.push(entry);
            }
        }
        paths
    } else if path.extension().is_some_and(|x| x == "cedar") {
        vec![path.to_owned()]
    } else {
        return Err(GovernanceError::Unreadable(format!(
            "`{}` is neither a directory nor a `.cedar` file",
            path.display()
        )));
    };
    let mut documents = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|e| unreadable(&path, e))?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        documents.push(PolicyDocument { name, text });
    }
    documents.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(documents)
}
