//! Hostile test plugin: floods every channel it has.
//!
//! `{"output_kib": N, "log_records": N, "stdout_kib": N}` returns a JSON string of
//! about N KiB, writes N log records and N KiB to stdout and stderr.
//! `"notes": N, "note": "..."` adds N copies of that note; `"error_kib": N,
//! "error_unit": "..."` fails instead, with a message of N KiB of that unit.

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
    #[serde(default)]
    notes: usize,
    #[serde(default)]
    note: String,
    #[serde(default)]
    error_kib: usize,
    #[serde(default)]
    error_unit: String,
}

struct HugeOutput;

impl Plugin for HugeOutput {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Input = request.input()?;
        if input.error_kib > 0 {
            let unit = if input.error_unit.is_empty() {
                "e"
            } else {
                &input.error_unit
            };
            let message = unit.repeat(input.error_kib * 1024 / unit.len().max(1));
            return Err(Error::failed(message));
        }
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
        let mut response = Response::raw_json(output);
        for _ in 0..input.notes {
            response = response.with_note(input.note.clone());
        }
        Ok(response)
    }
}

export_plugin!(HugeOutput);
