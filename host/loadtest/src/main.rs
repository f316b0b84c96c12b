//! `loadtest`: the end-to-end load benchmark.
//!
//! Starts each target as its own server process on loopback, drives it with
//! the same load, and prints one table with the ratios between them:
//!
//! - `bare`: a bare per-request wasmtime host (what `wasmtime serve` does);
//! - `native`: the plugin logic compiled natively behind the same HTTP stack;
//! - `axon`: Axon called directly (SigV4, limits, metrics: the product's host);
//! - `full`: Orbit -> Axon, the whole path (SigV4 twice, rate limits,
//!   governance), each in its own process.
//!
//! ```text
//! cargo run --release -p loadtest -- --plugin echo
//! ```
//!
//! Bounded: warm-up, a closed loop to saturation, then open loops at fixed
//! fractions of that saturation, per target. Loopback only.

mod bare;
mod load;
mod native;
mod procstat;
mod report;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use load::Target;
use report::{Figures, TargetReport};
use service_kit::telemetry::{self, LogFormat};

/// A faster allocator than the system one for many small, short-lived
/// allocations per request (measured: see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "loadtest",
    about = "End-to-end load benchmark of agent-runtime against bare baselines"
)]
struct Cli {
    #[command(subcommand)]
    serve: Option<Serve>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The plugin every target runs.
    #[arg(long, value_enum, default_value = "echo")]
    plugin: Plugin,
    /// Targets to measure, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bare,native,axon,full"
    )]
    targets: Vec<TargetKind>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Warm-up per target, in seconds.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Closed-loop run per target, in seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Open-loop rates, as fractions of the target's own saturation.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75")]
    open_loop: Vec<f64>,
    /// Each open-loop run, in seconds.
    #[arg(long, default_value_t = 5)]
    open_loop_secs: u64,
    /// Where to write the table, the JSON results and the plot.
    #[arg(long, default_value = "target/loadtest")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Serve {
    /// Run one server (used by the benchmark for its child processes).
    #[command(hide = true)]
    Serve {
        #[arg(value_enum)]
        kind: ServerKind,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, value_enum, default_value = "echo")]
        plugin: Plugin,
        #[arg(long)]
        axon_url: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Plugin {
    Echo,
    Keywords,
}

impl Plugin {
    fn name(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Keywords => "keywords",
        }
    }

    fn artifact(self) -> plugin_artifacts::Artifact {
        match self {
            Plugin::Echo => plugin_artifacts::ECHO,
            Plugin::Keywords => plugin_artifacts::KEYWORDS,
        }
    }

    fn input(self) -> serde_json::Value {
        match self {
            Self::Echo => serde_json::json!({ "message": "hello", "n": 42 }),
            Self::Keywords => serde_json::json!({
                "text": "WebAssembly components give each plugin its own memory and its own imports. A fresh \
                         instance per request means a plugin cannot keep state between requests, cannot read \
                         another plugin's memory, and cannot outlive its deadline.",
                "top": 5,
            }),
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum TargetKind {
    Bare,
    Native,
    Axon,
    Full,
    /// `full` with decisions not recorded: what the audit record costs.
    FullUnaudited,
    /// `full` through MCP: a `tools/call` to Orbit's `/mcp`.
    Mcp,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum ServerKind {
    Bare,
    Native,
    Axon,
    Orbit,
    OrbitUnaudited,
}

impl TargetKind {
    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Native => "native",
            Self::Axon => "axon",
            Self::Full => "full",
            Self::FullUnaudited => "full-unaudited",
            Self::Mcp => "mcp",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::Bare => "bare per-request wasmtime host: no auth, no limits, no governance",
            Self::Native => "the plugin compiled natively behind the same HTTP stack",
            Self::Axon => "Axon direct: SigV4, sandbox limits, metrics",
            Self::Full => {
                "Orbit -> Axon: SigV4 on both hops, rate limits, governance, the audit file"
            }
            Self::FullUnaudited => {
                "as full, with no audit record: a baseline, never a way to serve"
            }
            Self::Mcp => "as full, as an MCP tools/call to Orbit's /mcp (JSON-RPC, stateless)",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.serve {
        Some(Serve::Serve {
            kind,
            data_dir,
            plugin,
            axon_url,
        }) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(workers) = std::env::var("LOADTEST_SERVER_WORKERS")
                .ok()
                .and_then(|w| w.parse().ok())
            {
                builder.worker_threads(workers);
            }
            let runtime = builder
                .enable_all()
                .build()
                .context("starting the server runtime")?;
            runtime.block_on(serve(kind, &data_dir, plugin, axon_url))
        }
        None => {
            // The generator runs on one thread: it shares the machine with the servers.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the load generator")?;
            runtime.block_on(run(cli.run))
        }
    }
}

/// A child-process server: prints `LISTENING <addr>` once it accepts.
async fn serve(
    kind: ServerKind,
    data_dir: &Path,
    plugin: Plugin,
    axon_url: Option<String>,
) -> anyhow::Result<()> {
    if matches!(kind, ServerKind::Orbit | ServerKind::OrbitUnaudited) {
        // JSON logs, as deployed, to a file the benchmark gives as stderr.
        // `RUST_LOG=warn,audit=info` adds each decision's log line.
        telemetry::init(LogFormat::Json, "warn");
    } else {
        telemetry::init(LogFormat::Text, "warn");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let ready = || {
        println!("LISTENING {addr}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    };
    match kind {
        ServerKind::Bare => {
            let module = plugin.artifact().bytes()?;
            let server = bare::serve(listener, &module);
            ready();
            server.await
        }
        ServerKind::Native => {
            ready();
            native::serve(listener).await
        }
        ServerKind::Axon => {
            let config = axon::AxonConfig::local(data_dir.to_owned(), addr);
            let state = axon::build(
                &config,
                plugin_store::PluginSource::local(&config.plugin_dir()).await?,
            )
            .await?;
            axon::start(&config, &state).await?;
            ready();
            axon::serve(listener, state, config.front_door(), std::future::pending()).await
        }
        ServerKind::Orbit | ServerKind::OrbitUnaudited => {
            let axon_url = axon_url.context("--axon-url is required for orbit")?;
            let mut config = orbit::OrbitConfig::local(data_dir.to_owned(), addr, axon_url);
            // The benchmark measures the path, not the rate limiter's refusals.
            config.principal_rate = 1_000_000;
            config.principal_burst = 1_000_000;
            config.ip_rate = 1_000_000;
            config.ip_burst = 1_000_000;
            config.max_connections_per_client = config.max_connections;
            let source = plugin_store::PluginSource::local(&config.plugin_dir()).await?;
            let governor = config.open_governance().await?;
            let state = if kind == ServerKind::Orbit {
                orbit::build(&config, source, governor).await?
            } else {
                orbit::build_with_audit(&config, source, governor, governance::AuditLog::discard())
                    .await?
            };
            ready();
            orbit::serve(listener, state, config.front_door(), std::future::pending()).await
        }
    }
}

/// Child server processes, killed when dropped.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Servers {
    fn spawn(
        &mut self,
        kind: &str,
        data_dir: &Path,
        plugin: Plugin,
        axon_url: Option<&str>,
    ) -> anyhow::Result<SocketAddr> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut command = Command::new(exe);
        command
            .args(["serve", kind, "--plugin", plugin.name(), "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::piped());
        if kind.starts_with("orbit") {
            // Orbit's log, kept off the terminal (with the `audit` target on
            // it has a line per decision).
            let log = data_dir.join(format!("{kind}.log"));
            command.stderr(
                std::fs::File::create(&log)
                    .with_context(|| format!("creating `{}`", log.display()))?,
            );
        } else {
            command.stderr(Stdio::inherit());
        }
        if let Some(url) = axon_url {
            command.args(["--axon-url", url]);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the {kind} server"))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        self.0.push(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .with_context(|| format!("waiting for the {kind} server"))?;
        let addr = line.trim().strip_prefix("LISTENING ").with_context(|| {
            // Orbit's stderr went to its log: show its end.
            let log =
                std::fs::read_to_string(data_dir.join(format!("{kind}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            format!(
                "the {kind} server did not start (said `{}`) {}",
                line.trim(),
                tail.join("\n")
            )
        })?;
        Ok(addr.parse()?)
    }

    fn cpu_seconds(&self) -> Option<f64> {
        self.0.iter().map(|c| procstat::cpu_seconds(c.id())).sum()
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        let bytes: Option<u64> = self
            .0
            .iter()
            .map(|c| procstat::peak_rss_bytes(c.id()))
            .sum();
        bytes.map(|b| b as f64 / (1024.0 * 1024.0))
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Text, "warn");
    let dir = tempfile::tempdir().context("creating the benchmark's data directory")?;
    let prepared = local_stack::prepare(dir.path()).await?;
    let plugin = args.plugin;
    let digest = plugin_store::Digest::of(&plugin.artifact().bytes()?);
    let reason_body = serde_json::to_vec(&serde_json::json!({
        "plugin": plugin.name(),
        "version": "1.0.0",
        "digest": digest,
        "request": { "intent": "bench", "input": plugin.input() },
    }))?;
    let dispatch_body = serde_json::to_vec(&serde_json::json!({
        "plugin": plugin.name(),
        "version": "1.0.0",
        "intent": "bench",
        "input": plugin.input(),
    }))?;
    // The tool runs the plugin's `live` alias, which `prepare` points at 1.0.0.
    let tool_call = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": { "name": plugin.name(), "arguments": plugin.input() },
    }))?;

    println!(
        "plugin `{}`, {} connections, {} s warm-up, {} s closed loop, open loops at {:?} of saturation for {} s each",
        plugin.name(),
        args.connections,
        args.warmup_secs,
        args.duration_secs,
        args.open_loop,
        args.open_loop_secs
    );
    let mut reports = Vec::new();
    for kind in &args.targets {
        let mut servers = Servers(Vec::new());
        let target = match kind {
            TargetKind::Bare | TargetKind::Native | TargetKind::Axon => Target {
                addr: servers.spawn(kind.name(), dir.path(), plugin, None)?,
                path: "/v1/reason",
                body: reason_body.clone().into(),
                key: prepared.orbit_key.clone(),
                mcp: false,
            },
            TargetKind::Full | TargetKind::FullUnaudited | TargetKind::Mcp => {
                let axon = servers.spawn("axon", dir.path(), plugin, None)?;
                let orbit = if *kind == TargetKind::FullUnaudited {
                    "orbit-unaudited"
                } else {
                    "orbit"
                };
                let mcp = *kind == TargetKind::Mcp;
                Target {
                    addr: servers.spawn(
                        orbit,
                        dir.path(),
                        plugin,
                        Some(&format!("http://{axon}")),
                    )?,
                    path: if mcp { "/mcp" } else { "/dispatch" },
                    body: if mcp { &tool_call } else { &dispatch_body }.clone().into(),
                    key: prepared.dev_key.clone(),
                    mcp,
                }
            }
        };
        let target = Arc::new(target);
        print!("{:<14} warming up", kind.name());
        flush();
        let warm = load::closed_loop(
            target.clone(),
            args.connections,
            Duration::from_secs(args.warmup_secs),
        )
        .await;
        if warm.latencies_us.is_empty() {
            bail!(
                "{}: no request succeeded while warming up ({})",
                kind.name(),
                warm.first_error.unwrap_or_default()
            );
        }
        print!(", closed loop");
        flush();
        let cpu_before = servers.cpu_seconds();
        let client_before = procstat::cpu_seconds(std::process::id());
        let closed = load::closed_loop(
            target.clone(),
            args.connections,
            Duration::from_secs(args.duration_secs),
        )
        .await;
        let cpu_after = servers.cpu_seconds();
        let client_after = procstat::cpu_seconds(std::process::id());
        let saturation = Figures::of(&closed);
        let per_request = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(before), Some(after)) if saturation.ok > 0 => {
                Some((after - before) * 1e6 / saturation.ok as f64)
            }
            _ => None,
        };
        let cpu_us_per_request = per_request(cpu_before, cpu_after);
        let client_cpu_us_per_request = per_request(client_before, client_after);
        if let Some(error) = &closed.first_error {
            eprintln!("\n{}: first error: {error}", kind.name());
        }
        let mut open = Vec::new();
        for fraction in &args.open_loop {
            let rate = (saturation.requests_per_second * fraction).max(1.0);
            print!(", {rate:.0}/s");
            flush();
            let run = load::open_loop(
                target.clone(),
                args.connections,
                rate,
                Duration::from_secs(args.open_loop_secs),
            )
            .await;
            open.push((rate, Figures::of(&run)));
        }
        println!(" done");
        reports.push(TargetReport {
            target: kind.name().to_owned(),
            description: kind.description().to_owned(),
            saturation,
            cpu_us_per_request,
            client_cpu_us_per_request,
            peak_rss_mib: servers.peak_rss_mib(),
            open_loop: open,
        });
    }

    let table = report::table(&reports);
    let ratios = report::ratios(&reports);
    println!("\n{table}\n{ratios}");
    for r in &reports {
        println!("- {}: {}", r.target, r.description);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating `{}`", args.out.display()))?;
    let stem = format!("loadtest-{}", plugin.name());
    std::fs::write(
        args.out.join(format!("{stem}.md")),
        format!("{table}\n{ratios}"),
    )?;
    std::fs::write(
        args.out.join(format!("{stem}.json")),
        serde_json::to_vec_pretty(&reports)?,
    )?;
    let title = format!(
        "/dispatch and baselines, plugin `{}`: latency against offered load",
        plugin.name()
    );
    std::fs::write(
        args.out.join(format!("{stem}.svg")),
        report::plot(&reports, &title),
    )?;
    println!("\nwritten: {}/{stem}.{{md,json,svg}}", args.out.display());
    Ok(())
}

fn flush() {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}
