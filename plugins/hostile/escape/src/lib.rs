//! Hostile test plugin: tries to reach outside the sandbox and reports what it saw.
//!
//! Input `{"path": "/etc/hostname", "connect": "127.0.0.1:PORT"}`. Output:
//! `{"file": ..., "dir": ..., "env": [...], "args": [...], "connect": ..., "lookup": ...,
//! "wall_clock_secs": n, "hash_seed_probe": n, "secure_random_probe": n}` where every attempt is reported as
//! `{"ok": value}` or `{"err": message}`.

use std::hash::{BuildHasher, RandomState};
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{SystemTime, UNIX_EPOCH};

use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};
use serde_json::{Value, json};

fn outcome<T: Into<Value>, E: std::fmt::Display>(result: Result<T, E>) -> Value {
    match result {
        Ok(v) => json!({ "ok": v.into() }),
        Err(e) => json!({ "err": e.to_string() }),
    }
}

struct Escape;

impl Plugin for Escape {
    fn reason(request: Request) -> Result<Response, Error> {
        let input: Value = request.input()?;
        let path = input["path"].as_str().unwrap_or("/etc/hostname");
        let target = input["connect"].as_str().unwrap_or("127.0.0.1:80");

        let file = std::fs::File::open(path).and_then(|mut f| {
            let mut content = String::new();
            f.read_to_string(&mut content).map(|_| content)
        });
        let dir = std::fs::read_dir("/").map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().display().to_string())
                .collect::<Vec<_>>()
        });
        let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
        let args: Vec<String> = std::env::args().collect();
        let connect =
            TcpStream::connect(target).map(|s| format!("connected to {:?}", s.peer_addr()));
        let lookup = "localhost:80"
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.to_string()).collect::<Vec<_>>());
        let wall_clock_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        // std seeds `HashMap`s from `wasi:random/insecure-seed`: this exposes
        // what the sandbox gives (deterministic per version).
        let hash_seed_probe = RandomState::new().hash_one(0u8);
        // What a key generator would read: `wasi:random/random`, which must
        // be unpredictable.
        let secure_random_probe = wasip2::random::random::get_random_u64();

        Response::json(&json!({
            "file": outcome(file),
            "dir": outcome(dir),
            "env": env,
            "args": args,
            "connect": outcome(connect),
            "lookup": outcome(lookup),
            "wall_clock_secs": wall_clock_secs,
            "hash_seed_probe": hash_seed_probe,
            "secure_random_probe": secure_random_probe,
        }))
    }
}

export_plugin!(Escape);
