//! What a component says about itself: the world it targets, read from its
//! own imports and exports (not from anything the publisher wrote), so that
//! publishing refuses a module that does not implement the reasoning world
//! with a message naming what is missing. Axon still type-checks the whole
//! component when it links it; this is the early, cheap check (no compile).

use wasmparser::{Parser, Payload};

/// The package every plugin export and host import belongs to.
const PACKAGE: &str = "agent:reasoning";
/// The interface a plugin must export.
const REASONER: &str = "agent:reasoning/reasoner";
/// The host interfaces a plugin may import, besides WASI.
const HOST_INTERFACES: &[&str] = &[
    "agent:reasoning/types",
    "agent:reasoning/log",
    "agent:reasoning/config",
];
/// The contract versions this release serves.
const SUPPORTED_MAJOR: u64 = 1;
/// Imports that a capability grants, by prefix, and the capability.
const CAPABILITY_IMPORTS: &[(&str, &str)] = &[("wasi:nn/", crate::INFERENCE)];

/// The world `module` targets, e.g. `agent:reasoning/reasoning-plugin@1.1.0`
/// (`reasoning-plugin-with-inference` when it imports `wasi:nn`), or why
/// it is not a reasoning plugin.
pub fn reasoning_world(module: &[u8]) -> Result<String, String> {
    if !module.starts_with(b"\0asm") {
        return Err(
            "the file is not WebAssembly (no `\\0asm` header); build it with `--target wasm32-wasip2`"
                .into(),
        );
    }
    if !Parser::is_component(module) {
        return Err("the module is a core WebAssembly module, not a component; build it with `--target wasm32-wasip2` (or run `wasm-tools component new`)".into());
    }
    let (imports, exports) = interface_names(module)?;
    let reasoner = exports
        .iter()
        .find_map(|name| split_version(name).filter(|(iface, _)| *iface == REASONER))
        .ok_or_else(|| {
            let found = if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            };
            format!(
                "the component does not implement the reasoning world: it must export `{REASONER}@{SUPPORTED_MAJOR}.x` (it exports {found}); build it against `wit/` with the plugin SDK"
            )
        })?;
    let version = semver::Version::parse(reasoner.1)
        .map_err(|_| format!("`{REASONER}` has an invalid version `{}`", reasoner.1))?;
    if version.major != SUPPORTED_MAJOR {
        return Err(format!(
            "the component targets `{PACKAGE}@{version}`, this release serves `{PACKAGE}@{SUPPORTED_MAJOR}.x`"
        ));
    }
    for import in &imports {
        let allowed = import.starts_with("wasi:")
            || split_version(import).is_some_and(|(iface, _)| HOST_INTERFACES.contains(&iface));
        if !allowed {
            return Err(format!(
                "the component imports `{import}`, which the host does not offer (it offers {} and WASI)",
                HOST_INTERFACES.join(", ")
            ));
        }
    }
    // 1.1.0 names the world of plugins that run models; earlier ones that
    // do are the plain world plus `wasi:nn`, as they were built.
    let world = if version >= semver::Version::new(1, 1, 0)
        && !needed_by(imports.iter().map(String::as_str)).is_empty()
    {
        "reasoning-plugin-with-inference"
    } else {
        "reasoning-plugin"
    };
    Ok(format!("{PACKAGE}/{world}@{version}"))
}

/// The capabilities `module`'s imports need (e.g. `inference` for
/// `wasi:nn`), with the first import that needs each. Empty for a module
/// that does not parse: [`reasoning_world`] says why.
pub fn needed_capabilities(module: &[u8]) -> Vec<(&'static str, String)> {
    needed_by(
        interface_names(module)
            .map(|(imports, _)| imports)
            .unwrap_or_default()
            .iter()
            .map(String::as_str),
    )
}

/// The capabilities `imports` (interface names) need, each with the first
/// import that needs it.
pub fn needed_by<'a>(imports: impl IntoIterator<Item = &'a str>) -> Vec<(&'static str, String)> {
    let mut needed: Vec<(&'static str, String)> = Vec::new();
    for import in imports {
        for (prefix, capability) in CAPABILITY_IMPORTS {
            if import.starts_with(prefix) && !needed.iter().any(|(c, _)| c == capability) {
                needed.push((capability, import.to_owned()));
            }
        }
    }
    needed
}

/// The top-level import and export names of a component.
fn interface_names(module: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| format!("the component does not parse: {e}"))?;
        match payload {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| format!("bad import section: {e}"))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| format!("bad export section: {e}"))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// `ns:pkg/iface@1.2.3` as (`ns:pkg/iface`, `1.2.3`).
fn split_version(name: &str) -> Option<(&str, &str)> {
    name.split_once('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_components_are_refused_with_what_to_do() {
        assert!(
            reasoning_world(b"MZ")
                .unwrap_err()
                .contains("not WebAssembly")
        );
        // The smallest core module: magic and version 1.
        let core = b"\0asm\x01\0\0\0";
        assert!(
            reasoning_world(core)
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        // The smallest component: magic and the component layer.
        let empty = b"\0asm\x0d\0\x01\0";
        let err = reasoning_world(empty).unwrap_err();
        assert!(
            err.contains("must export `agent:reasoning/reasoner@1.x`"),
            "{err}"
        );
        assert!(err.contains("exports nothing"), "{err}");
    }
}
