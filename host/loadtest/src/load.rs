//! The load generator: keep-alive HTTP/1.1 connections (hyper), each a
//! task sending requests one after another.
//!
//! - Closed loop: every connection sends as fast as answers come back; the
//!   throughput is the target's saturation at that concurrency.
//! - Open loop: requests are due at a fixed rate whatever the answers do.
//!   Latency is measured from when a request was due if its connection was
//!   still busy then (no coordinated omission), from when it was sent if the
//!   connection was idle (so the 1 ms timer wheel does not count against the
//!   target).
//!
//! Every request is signed (SigV4) on every target, so the client's own cost
//! is the same whichever server it measures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use auth::SigningKey;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// What to send, and where.
pub struct Target {
    pub addr: SocketAddr,
    pub path: &'static str,
    pub body: Bytes,
    pub key: SigningKey,
    /// An MCP `tools/call`: a `200` counts only if the call succeeded (a
    /// refused or failed call is a `200` with a tool error).
    pub mcp: bool,
}

impl Target {
    /// Whether a `2xx` body is a success.
    fn succeeded(&self, body: &[u8]) -> bool {
        if !self.mcp {
            return true;
        }
        serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|reply| {
            reply["result"].is_object()
                && reply["result"]["isError"] != serde_json::Value::Bool(true)
        })
    }
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Run {
    /// Latency of every successful request, in microseconds.
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Run {
    fn merge(&mut self, other: Run) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }
}

#[derive(Clone)]
enum Pace {
    Closed,
    Open {
        start: Instant,
        interval: Duration,
        next: Arc<AtomicU64>,
    },
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

fn signed_request(target: &Target, url: &str, host: &str) -> anyhow::Result<Request<Full<Bytes>>> {
    let correlation_id = uuid::Uuid::new_v4().to_string();
    // Axon direct requires a unique signed request id; Orbit ignores it.
    let request_id = uuid::Uuid::new_v4().to_string();
    let headers = [
        ("content-type", "application/json"),
        ("x-correlation-id", correlation_id.as_str()),
        (auth::REQUEST_ID_HEADER, request_id.as_str()),
    ];
    let signature = auth::sign(
        &target.key,
        "POST",
        url,
        &headers,
        &target.body,
        SystemTime::now(),
    )
    .map_err(anyhow::Error::msg)?;
    let mut request = Request::post(target.path).header("host", host);
    if target.mcp {
        request = request.header("accept", "application/json, text/event-stream");
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    for (name, value) in signature {
        request = request.header(name, value);
    }
    Ok(request.body(Full::new(target.body.clone()))?)
}

async fn worker(target: Arc<Target>, pace: Pace, until: Instant) -> Run {
    let mut run = Run::default();
    let url = format!("http://{}{}", target.addr, target.path);
    let host = target.addr.to_string();
    let mut sender = None;
    loop {
        // When this request counts from.
        let counted_from = match &pace {
            Pace::Closed => Instant::now(),
            Pace::Open {
                start,
                interval,
                next,
            } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let due = *start + interval.mul_f64(n as f64);
                if due >= until {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep_until(due.into()).await;
                    Instant::now()
                } else {
                    due
                }
            }
        };
        if counted_from >= until {
            break;
        }
        if sender.is_none() {
            match connect(target.addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    run.error(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(connection) = sender.as_mut() else {
            continue;
        };
        let request = match signed_request(&target, &url, &host) {
            Ok(request) => request,
            Err(e) => {
                run.error(format!("sign: {e}"));
                continue;
            }
        };
        let outcome = async {
            connection.ready().await?;
            let response = connection.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        }
        .await;
        match outcome {
            Ok((status, body)) if status.is_success() && target.succeeded(&body) => {
                let micros = counted_from.elapsed().as_micros();
                run.latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Ok((status, body)) => {
                run.error(format!("{status}: {}", String::from_utf8_lossy(&body)))
            }
            Err(e) => {
                run.error(format!("request: {e}"));
                sender = None;
            }
        }
    }
    run
}

async fn drive(target: Arc<Target>, connections: usize, duration: Duration, pace: Pace) -> Run {
    let started = Instant::now();
    let until = started + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(worker(target.clone(), pace.clone(), until)))
        .collect();
    let mut run = Run::default();
    for w in workers {
        match w.await {
            Ok(part) => run.merge(part),
            Err(e) => run.error(format!("worker: {e}")),
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// As fast as `connections` keep-alive connections can go, for `duration`.
pub async fn closed_loop(target: Arc<Target>, connections: usize, duration: Duration) -> Run {
    drive(target, connections, duration, Pace::Closed).await
}

/// `rate` requests per second over up to `connections` connections.
pub async fn open_loop(
    target: Arc<Target>,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> Run {
    let pace = Pace::Open {
        start: Instant::now(),
        interval: Duration::from_secs_f64(1.0 / rate.max(1.0)),
        next: Arc::new(AtomicU64::new(0)),
    };
    drive(target, connections, duration, pace).await
}
