//! The guest plugins of `plugins/`, compiled to components by this crate's
//! build script. Tests, benchmarks and the dev stack name a plugin here,
//! never a path.

use std::path::Path;

/// One compiled plugin.
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// The plugin's name (also its crate name).
    pub name: &'static str,
    /// The component file.
    pub wasm: &'static str,
    /// Its `plugin.toml`, for plugins the dev stack publishes.
    pub manifest: Option<&'static str>,
}

impl Artifact {
    /// The component's bytes.
    pub fn bytes(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.wasm)
    }

    /// Its `plugin.toml` text, if it has one.
    pub fn manifest_text(&self) -> Option<std::io::Result<String>> {
        self.manifest.map(std::fs::read_to_string)
    }

    /// The component's path.
    pub fn path(&self) -> &'static Path {
        Path::new(self.wasm)
    }
}

macro_rules! artifact {
    ($name:literal, $file:literal) => {
        Artifact {
            name: $name,
            wasm: concat!(env!("PLUGIN_WASM_DIR"), "/", $file, ".wasm"),
            manifest: None,
        }
    };
    ($name:literal, $file:literal, $dir:literal) => {
        Artifact {
            name: $name,
            wasm: concat!(env!("PLUGIN_WASM_DIR"), "/", $file, ".wasm"),
            manifest: Some(concat!(
                env!("PLUGIN_SOURCE_DIR"),
                "/",
                $dir,
                "/plugin.toml"
            )),
        }
    };
}

/// Returns its input unchanged: the trivial plugin benchmarks measure.
pub const ECHO: Artifact = artifact!("echo", "echo", "examples/echo");
/// The most frequent words of a text.
pub const KEYWORDS: Artifact = artifact!("keywords", "keywords", "examples/keywords");
/// Rule-based triage of support messages, configured by plugin config.
pub const TRIAGE: Artifact = artifact!("triage", "triage", "examples/triage");

/// Keeps a counter in a global: must read 1 on every request.
pub const COUNTER: Artifact = artifact!("counter", "counter");
/// Recurses to a depth, or overflows the stack.
pub const DEEP_RECURSION: Artifact = artifact!("deep-recursion", "deep_recursion");
/// Tries files, environment, sockets and clocks, and reports what it saw.
pub const ESCAPE: Artifact = artifact!("escape", "escape");
/// Floods output, logs, stdout and stderr.
pub const HUGE_OUTPUT: Artifact = artifact!("huge-output", "huge_output");
/// Allocates a bounded amount, or without bound.
pub const MEMORY_BOMB: Artifact = artifact!("memory-bomb", "memory_bomb");
/// Panics on every request.
pub const PANIC: Artifact = artifact!("panic", "panic");
/// Spins, forever or for a count, or sleeps in the host.
pub const SPIN_LOOP: Artifact = artifact!("spin-loop", "spin_loop");

/// The examples the dev stack publishes, each with a `plugin.toml`.
pub const EXAMPLES: &[Artifact] = &[ECHO, KEYWORDS, TRIAGE];

/// The hostile plugins the sandbox tests run.
pub const HOSTILE: &[Artifact] = &[
    COUNTER,
    DEEP_RECURSION,
    ESCAPE,
    HUGE_OUTPUT,
    MEMORY_BOMB,
    PANIC,
    SPIN_LOOP,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_artifact_is_a_built_component() {
        for artifact in EXAMPLES.iter().chain(HOSTILE) {
            let bytes = artifact.bytes().unwrap();
            assert!(bytes.starts_with(b"\0asm"), "{} is not wasm", artifact.name);
        }
        for example in EXAMPLES {
            assert!(
                example
                    .manifest_text()
                    .unwrap()
                    .unwrap()
                    .contains(example.name)
            );
        }
    }
}
