//! The guest plugins of `plugins/`, compiled to components by this crate's
//! build script. Tests, benchmarks and the dev stack name a plugin here,
//! never a path.

use std::path::Path;

use sha2::Digest as _;

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
/// Holds host-side WASI resources (clock pollables) without bound.
pub const RESOURCE_FLOOD: Artifact = artifact!("resource-flood", "resource_flood");
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

/// A plugin written in Python (`plugins/python/<name>/app.py`), built into a
/// component with componentize-py when first asked for, against `wit/`.
#[derive(Debug, Clone, Copy)]
pub struct PythonPlugin {
    pub name: &'static str,
    dir: &'static str,
}

/// Finds the email addresses and links in a text (Python, componentize-py).
pub const CONTACTS: PythonPlugin = PythonPlugin {
    name: "contacts",
    dir: concat!(env!("PLUGIN_SOURCE_DIR"), "/python/contacts"),
};

impl PythonPlugin {
    /// Its `plugin.toml` text.
    pub fn manifest_text(&self) -> std::io::Result<String> {
        std::fs::read_to_string(Path::new(self.dir).join("plugin.toml"))
    }

    /// The component's bytes, built unless a build of the same sources is
    /// cached (under the plugins' target directory, keyed by a hash of the
    /// plugin's source, the WIT contract and the componentize-py version).
    ///
    /// componentize-py is the one next to `$AGENT_RUNTIME_PYTHON` (the venv
    /// `./scripts/test.sh` sets up), else the one on `PATH`.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        let wit = Path::new(env!("PLUGIN_SOURCE_DIR")).join("../wit");
        let tool = std::env::var_os("AGENT_RUNTIME_PYTHON")
            .map(|python| Path::new(&python).with_file_name("componentize-py"))
            .unwrap_or_else(|| "componentize-py".into());
        let cannot_run = |e: std::io::Error| {
            format!(
                "cannot run `{}`: {e}; run ./scripts/test.sh (it installs componentize-py \
                 from scripts/requirements-test.txt) or `pip install componentize-py`",
                tool.display()
            )
        };
        let version = std::process::Command::new(&tool)
            .arg("--version")
            .output()
            .map_err(cannot_run)?;
        let mut hasher = sha2::Sha256::new();
        hasher.update(&version.stdout);
        for file in [
            Path::new(self.dir).join("app.py"),
            wit.join("reasoning.wit"),
        ] {
            let text = std::fs::read(&file)
                .map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
            hasher.update(&text);
        }
        let hash = hex(&hasher.finalize()[..8]);
        let out_dir = Path::new(env!("PLUGIN_WASM_DIR")).join("python");
        let out = out_dir.join(format!("{}-{hash}.wasm", self.name));
        if let Ok(bytes) = std::fs::read(&out) {
            return Ok(bytes);
        }
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| format!("cannot create `{}`: {e}", out_dir.display()))?;
        // Unique per builder, renamed into place: racing tests never see half a file.
        let partial = out.with_extension(format!(
            "{}-{:?}.partial",
            std::process::id(),
            std::thread::current().id()
        ));
        let output = std::process::Command::new(&tool)
            .arg("-d")
            .arg(&wit)
            .args([
                "-w",
                "reasoning-plugin",
                "componentize",
                "-p",
                self.dir,
                "app",
                "-o",
            ])
            .arg(&partial)
            .output()
            .map_err(cannot_run)?;
        if !output.status.success() {
            return Err(format!(
                "componentize-py failed to build `{}`: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        std::fs::rename(&partial, &out)
            .map_err(|e| format!("cannot move `{}` into place: {e}", out.display()))?;
        std::fs::read(&out).map_err(|e| format!("cannot read `{}`: {e}", out.display()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
