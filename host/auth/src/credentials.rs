//! AWS shared-credentials files (`~/.aws/credentials` format), so boto3, the
//! AWS CLI and awscurl can sign with keys this project issued:
//!
//! ```ini
//! [agent-runtime]
//! aws_access_key_id = AKAR...
//! aws_secret_access_key = ...
//! ```

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` readable by the owner only (0600), atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Sets `profile` in the credentials file at `path` (created if missing),
/// keeping every other profile.
pub fn write_profile(
    path: &Path,
    profile: &str,
    access_key_id: &str,
    secret: &str,
) -> std::io::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut out = String::new();
    let mut skipping = false;
    for line in existing.lines() {
        if let Some(name) = section_name(line) {
            skipping = name == profile;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(&format!(
        "[{profile}]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret}\n"
    ));
    write_private(path, out.as_bytes())
}

/// Reads `profile`'s key id and secret from the credentials file at `path`.
pub fn read_profile(path: &Path, profile: &str) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read credentials file `{}`: {e}", path.display()))?;
    let mut in_profile = false;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        if let Some(name) = section_name(line) {
            in_profile = name == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            match key.trim() {
                "aws_access_key_id" => id = Some(value.trim().to_owned()),
                "aws_secret_access_key" => secret = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) => Ok((id, secret)),
        _ => Err(format!(
            "profile `{profile}` in `{}` has no aws_access_key_id and aws_secret_access_key",
            path.display()
        )),
    }
}

fn section_name(line: &str) -> Option<&str> {
    let line = line.trim();
    line.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_written_replaced_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        write_profile(&path, "other", "AKOTHER", "s1").unwrap();
        write_profile(&path, "agent-runtime", "AKAR1", "s2").unwrap();
        write_profile(&path, "agent-runtime", "AKAR2", "s3").unwrap();
        assert_eq!(
            read_profile(&path, "agent-runtime").unwrap(),
            ("AKAR2".into(), "s3".into())
        );
        assert_eq!(
            read_profile(&path, "other").unwrap(),
            ("AKOTHER".into(), "s1".into())
        );
        assert!(read_profile(&path, "missing").is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("[agent-runtime]").count(), 1, "{text}");
    }
}
