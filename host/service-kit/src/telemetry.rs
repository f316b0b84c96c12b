//! Logging set-up shared by every binary: JSON lines by default (one object
//! per event, carrying the request span's correlation id), or compact text
//! for people at a terminal. `RUST_LOG` filters as usual.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, for machines.
    #[default]
    Json,
    /// Compact text, for people.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => Err(format!(
                "log format must be `json` or `text`, not `{other}`"
            )),
        }
    }
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG`
/// is unset. Calling it twice keeps the first subscriber (tests do that).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}
