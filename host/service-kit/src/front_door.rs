//! The front door Orbit and Axon listen through: one client that opens
//! connections and never finishes them, or sends its body slowly, cannot
//! take the server from everyone else.
//!
//! - A header-read timeout: the request line and headers must arrive within
//!   it. Hyper applies it from the moment a connection waits for a request,
//!   so it also bounds how long a kept-alive connection may sit idle.
//!   (`axum::serve` builds hyper without a timer, so there it never fires.)
//! - A body-read deadline: the whole request body must arrive within it,
//!   counted from its headers (not between chunks, which a client could
//!   trickle for ever).
//! - A cap on open connections, overall and per client (an IPv4 address, or
//!   an IPv6 /64, which one host usually holds whole). A connection past
//!   either cap gets a short `503` with `Connection: close` and is closed at
//!   once, so descriptors never run out and the client hears why.
//!
//! Handlers see the client's address as `ConnectInfo<SocketAddr>`, as with
//! `axum::serve(..., into_make_service_with_connect_info)`.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// What a refused connection is told.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 93\r\n\r\n{\"error\":{\"code\":\"OVERLOADED\",\"message\":\"too many connections from this client or in total\"}}";

/// How long a refused client gets to take its `503`.
const REFUSE_WRITE: Duration = Duration::from_secs(1);

/// Refusals being written at once; past this a refused connection is just
/// closed, so a flood of them costs nothing that grows.
const MAX_REFUSING: usize = 1024;

/// The front door's limits. Each service sets them from its own flags, with
/// its own defaults (Axon's only client is Orbit, so it caps per client far
/// higher than Orbit does).
#[derive(Debug, Clone)]
pub struct FrontDoor {
    /// How long a client may take to send a request's line and headers, and
    /// how long a kept-alive connection may sit idle.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a whole request body, from the
    /// moment its headers arrived.
    pub body_read_timeout: Duration,
    /// Open connections, all clients together.
    pub max_connections: usize,
    /// Open connections from one client address (IPv6: one /64).
    pub max_connections_per_client: usize,
    /// How long in-flight requests may finish once shutdown begins.
    pub shutdown_grace: Duration,
}

/// An address as proxies write it in `X-Forwarded-For`: `1.2.3.4`,
/// `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
pub fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// The client a connection counts against: its IPv4 address, or the /64 of
/// its IPv6 address (an IPv4-mapped one counts as IPv4).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Open connections, in total and per client.
#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// A connection counted as open until dropped.
struct Admitted {
    open: Arc<Mutex<Open>>,
    client: IpAddr,
}

impl Admitted {
    fn new(open: &Arc<Mutex<Open>>, client: IpAddr, door: &FrontDoor) -> Option<Self> {
        let mut counts = open.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = counts.per_client.get(&client).copied().unwrap_or(0);
        if counts.total >= door.max_connections || mine >= door.max_connections_per_client {
            return None;
        }
        counts.total += 1;
        counts.per_client.insert(client, mine + 1);
        Some(Self {
            open: open.clone(),
            client,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

/// A request body that must arrive whole by a deadline set when the request
/// began (a per-chunk timeout would let a client trickle a byte at a time
/// for ever).
struct Deadline {
    body: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(body: Incoming, within: Duration) -> Self {
        Self {
            body,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// The request body did not arrive in time.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the body did not arrive within the body-read timeout")
    }
}

impl std::error::Error for BodyTimedOut {}

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Tells a connection past the caps why, briefly, and closes it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSE_WRITE, async {
        let _ = stream.write_all(REFUSED).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Raises this process's open-files limit to its hard limit, so the
/// connection caps (plus each request's outbound calls) are reached before
/// descriptors run out; warns when even the hard limit is below `door`'s
/// cap.
pub fn raise_open_files_limit(door: &FrontDoor) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < (door.max_connections as u64) * 2 + 256 => tracing::warn!(
            limit,
            max_connections = door.max_connections,
            "the open-files limit is low for the connection cap; lower --max-connections or raise the limit"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
    }
}

/// Serves `router` on `listener` through the front door until `shutdown`
/// resolves, then lets in-flight requests finish (for at most
/// `door.shutdown_grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    door: FrontDoor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(door.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Mutex::new(Open::default()));
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let body_deadline = door.body_read_timeout;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or the client gave up: pause, go on.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(admitted) = Admitted::new(&open, client_key(peer.ip()), &door) else {
            tracing::debug!(%peer, "connection refused: over the connection caps");
            if let Ok(permit) = refusing.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let request =
                request.map(|body| axum::body::Body::new(Deadline::new(body, body_deadline)));
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(admitted);
        });
    }
    drop(listener);
    if tokio::time::timeout(door.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after the shutdown grace period are abandoned");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn connections_are_capped_in_total_and_per_client_and_released_on_drop() {
        let door = FrontDoor {
            header_read_timeout: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
            max_connections: 3,
            max_connections_per_client: 2,
            shutdown_grace: Duration::from_secs(1),
        };
        let open = Arc::new(Mutex::new(Open::default()));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let a1 = Admitted::new(&open, a, &door).unwrap();
        let _a2 = Admitted::new(&open, a, &door).unwrap();
        assert!(Admitted::new(&open, a, &door).is_none(), "per client");
        let _b1 = Admitted::new(&open, b, &door).unwrap();
        assert!(Admitted::new(&open, b, &door).is_none(), "in total");
        drop(a1);
        assert!(Admitted::new(&open, b, &door).is_some(), "released on drop");
    }

    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap()["error"]["code"],
            "OVERLOADED"
        );
    }
}
