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
/// Intent and urgency of a support message, from the `support-intent`
/// model through `wasi:nn` (see [`SUPPORT_INTENT_MODEL`]).
pub const SUPPORT_INTENT: Artifact = artifact!(
    "support-intent",
    "support_intent",
    "examples/support-intent"
);

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
/// Feeds the `support-intent` model huge batches, or calls it in a loop.
pub const INFERENCE_ABUSE: Artifact = artifact!("inference-abuse", "inference_abuse");
/// Spins, forever or for a count, or sleeps in the host.
pub const SPIN_LOOP: Artifact = artifact!("spin-loop", "spin_loop");

/// The examples the dev stack publishes, each with a `plugin.toml`.
pub const EXAMPLES: &[Artifact] = &[ECHO, KEYWORDS, TRIAGE];

/// Built against the frozen `agent:reasoning@1.0.0` contract
/// (`wit/versions/1.0.0`): plugins from before 1.1.0 run unchanged.
pub const ECHO_1_0: Artifact = artifact!("echo-1-0", "echo_1_0");

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
        for artifact in EXAMPLES
            .iter()
            .chain(HOSTILE)
            .chain([&SUPPORT_INTENT, &INFERENCE_ABUSE])
        {
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
        let sources = [
            Path::new(self.dir).join("app.py"),
            wit.join("reasoning.wit"),
        ];
        cached_build(
            "python",
            self.name,
            "wasm",
            &version.stdout,
            &sources,
            |partial| {
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
                    .arg(partial)
                    .output()
                    .map_err(cannot_run)?;
                if !output.status.success() {
                    return Err(format!(
                        "componentize-py failed to build `{}`: {}",
                        self.name,
                        String::from_utf8_lossy(&output.stderr)
                    ));
                }
                Ok(())
            },
        )
    }
}

/// A model built by a script in `plugins/` (`train.py OUT`) from data in
/// the repository, built when first asked for and cached (keyed by a hash
/// of the script and its data) under the plugins' target directory.
#[derive(Debug, Clone, Copy)]
pub struct TrainedModel {
    pub name: &'static str,
    /// Holds `train.py`, its data and `model.toml`.
    dir: &'static str,
    /// The files the model is built from.
    sources: &'static [&'static str],
}

/// The support-intent classifier (`plugins/examples/support-intent/model`).
pub const SUPPORT_INTENT_MODEL: TrainedModel = TrainedModel {
    name: "support-intent",
    dir: concat!(env!("PLUGIN_SOURCE_DIR"), "/examples/support-intent/model"),
    sources: &["train.py", "messages.csv"],
};

/// The inference benchmark's model: a perceptron with fixed random weights
/// (`plugins/models/bench-medium`), about 8 million multiply-adds per row.
pub const BENCH_MEDIUM_MODEL: TrainedModel = TrainedModel {
    name: "bench-medium",
    dir: concat!(env!("PLUGIN_SOURCE_DIR"), "/models/bench-medium"),
    sources: &["train.py"],
};

impl TrainedModel {
    /// Its `model.toml` text: what its publisher signs.
    pub fn spec_text(&self) -> std::io::Result<String> {
        std::fs::read_to_string(Path::new(self.dir).join("model.toml"))
    }

    /// The model's bytes (ONNX), trained unless cached.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        let dir = Path::new(self.dir);
        let sources: Vec<_> = self.sources.iter().map(|f| dir.join(f)).collect();
        cached_build("models", self.name, "onnx", b"", &sources, |out| {
            python(&[dir.join("train.py").as_os_str(), out.as_os_str()]).map(drop)
        })
    }

    /// Each text's output tensors as native ONNX Runtime computes them (the
    /// `onnxruntime` Python package), one JSON object per line. Only for a
    /// model whose script has `--predict` (support-intent).
    pub fn predict_natively(&self, model: &Path, texts: &[&str]) -> Result<String, String> {
        let script = Path::new(self.dir).join("train.py");
        let mut args = vec![script.as_os_str(), "--predict".as_ref(), model.as_os_str()];
        args.extend(texts.iter().map(std::ffi::OsStr::new));
        python(&args)
    }
}

/// libonnxruntime from the `onnxruntime` package of the test Python (the
/// library Axon loads for inference), or `$AGENT_RUNTIME_ONNXRUNTIME`
/// where set (scripts/gpu-check.sh sets the `onnxruntime-gpu` one).
pub fn onnxruntime_library() -> Result<std::path::PathBuf, String> {
    if let Some(library) = std::env::var_os("AGENT_RUNTIME_ONNXRUNTIME") {
        return Ok(library.into());
    }
    let package = python(&[
        "-c".as_ref(),
        "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))".as_ref(),
    ])?;
    let capi = Path::new(package.trim()).join("capi");
    let entries =
        std::fs::read_dir(&capi).map_err(|e| format!("cannot list `{}`: {e}", capi.display()))?;
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || (n.starts_with("libonnxruntime") && n.ends_with(".dylib"))
            })
        })
        .ok_or_else(|| format!("no libonnxruntime in `{}`", capi.display()))
}

/// Runs the test Python (`$AGENT_RUNTIME_PYTHON`, else `python3`) with
/// `args`; its standard output, or why it failed.
fn python(args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let python = std::env::var_os("AGENT_RUNTIME_PYTHON").unwrap_or_else(|| "python3".into());
    let output = std::process::Command::new(&python)
        .args(args)
        .output()
        .map_err(|e| {
            format!(
                "cannot run `{}`: {e}; run ./scripts/test.sh (it sets up the test Python)",
                Path::new(&python).display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "`{} {:?}` failed: {}",
            Path::new(&python).display(),
            args,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| format!("python printed non-UTF-8: {e}"))
}

/// The bytes `build` writes to the path it is given, cached under
/// `<plugins' target>/<subdir>/<name>-<hash>.<extension>`, keyed by a hash of
/// `salt` and the contents of `sources`: built only when no build of the
/// same inputs is there. Each builder writes its own partial file and
/// renames it into place, so racing tests never see half a file.
fn cached_build(
    subdir: &str,
    name: &str,
    extension: &str,
    salt: &[u8],
    sources: &[std::path::PathBuf],
    build: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<Vec<u8>, String> {
    let mut hasher = sha2::Sha256::new();
    hasher.update(salt);
    for file in sources {
        let text =
            std::fs::read(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
        hasher.update(&text);
    }
    let hash = hex(&hasher.finalize()[..8]);
    let out_dir = Path::new(env!("PLUGIN_WASM_DIR")).join(subdir);
    let out = out_dir.join(format!("{name}-{hash}.{extension}"));
    if let Ok(bytes) = std::fs::read(&out) {
        return Ok(bytes);
    }
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create `{}`: {e}", out_dir.display()))?;
    let partial = out.with_extension(format!(
        "{}-{:?}.partial",
        std::process::id(),
        std::thread::current().id()
    ));
    build(&partial)?;
    std::fs::rename(&partial, &out)
        .map_err(|e| format!("cannot move `{}` into place: {e}", out.display()))?;
    std::fs::read(&out).map_err(|e| format!("cannot read `{}`: {e}", out.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
