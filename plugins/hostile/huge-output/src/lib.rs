//! Hostile test plugin: floods every channel it has.
//!
//! `{"output_kib": N, "log_records": N, "stdout_kib": N}` returns a JSON string of
//! about N KiB, writes N log records and N KiB to stdout and stderr.

use std::io::Write;

use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin, log};
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    output_kib: usize,
    #[serde(default)]
    log_records: usize,
    #[serde(default)]
    stdout_kib: usize,
}

struct HugeOutput;

impl Plugin for HugeOutput {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Input = request.input()?;
        for i in 0..input.log_records {
            log::log(log::Level::Info, "flood", &[("record", &i.to_string())]);
        }
        let line = [b'x'; 1023];
        for _ in 0..input.stdout_kib {
            // Writes past the host's capture limit are dropped, not fatal.
            let _ = std::io::stdout()
                .write_all(&line)
                .and_then(|()| std::io::stdout().write_all(b"\n"));
            let _ = std::io::stderr()
                .write_all(&line)
                .and_then(|()| std::io::stderr().write_all(b"\n"));
        }
        let mut output = String::with_capacity(input.output_kib * 1024 + 2);
        output.push('"');
        output.extend(std::iter::repeat_n('y', input.output_kib * 1024));
        output.push('"');
        Ok(Response::raw_json(output))
    }
}

export_plugin!(HugeOutput);
