//! Builds the guest plugins (the `plugins/` workspace) for `wasm32-wasip2` in
//! release mode, and tells the library where the components are.
//!
//! The nested cargo gets a clean environment (the outer build's flags, wrappers
//! such as clippy-driver and target settings are for the host, not the guest)
//! and its own target directory, so it never contends for the outer lock.

use std::env;
use std::error::Error;
use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../..").canonicalize()?;
    let plugins = root.join("plugins");
    for input in [
        "Cargo.toml",
        "Cargo.lock",
        ".cargo",
        "sdk",
        "examples",
        "hostile",
        "compat",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(input).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("wit").display());

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut command = Command::new(cargo);
    command
        .current_dir(&plugins)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .env_clear();
    for (key, value) in env::vars_os() {
        if let Some(key_str) = key.to_str()
            && passes_through(key_str)
        {
            command.env(&key, value);
        }
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!(
            "building the plugins in `{}` failed ({status}); if the error mentions a missing \
             target, run `rustup target add {TARGET}`",
            plugins.display()
        )
        .into());
    }

    let out = target_dir.join(TARGET).join("release");
    println!("cargo:rustc-env=PLUGIN_WASM_DIR={}", out.display());
    println!("cargo:rustc-env=PLUGIN_SOURCE_DIR={}", plugins.display());
    Ok(())
}

/// The variables the nested build may see: where the toolchain and registry
/// are, how to reach the network, and the outer build's jobserver.
fn passes_through(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "TMPDIR",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_MAKEFLAGS",
        "CARGO_TERM_COLOR",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
    ];
    EXACT.contains(&key)
        || PREFIXES.iter().any(|p| key.starts_with(p))
        || key.to_ascii_lowercase().ends_with("_proxy")
}
