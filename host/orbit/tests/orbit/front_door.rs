//! The front door under a flood: a client that opens connections and never
//! finishes a request, trickles its body or idles, cannot take Orbit from
//! anyone else.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::Stack;

/// Connections the flood holds open at once.
const FLOOD: usize = 10_000;

/// A connection from `from` that sends half a request line and stops.
async fn half_open(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(b"POST /dispatch HT").await.unwrap();
    stream
}

/// Everything the server sends before it closes the connection.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    answer
}

fn orbit_addr(stack: &Stack) -> SocketAddr {
    stack.orbit_url["http://".len()..].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_do_not_starve_other_clients() {
    // The flood and the server share this process's descriptors.
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    // A long header timeout: the admitted half of the flood stays open
    // throughout, so only the caps protect the honest client.
    let stack = Stack::start_with(|c| {
        c.header_read_timeout_ms = 600_000;
        c.max_connections_per_client = 100;
    })
    .await;
    let orbit = orbit_addr(&stack);

    // The flood comes from 127.0.0.2; the honest client from 127.0.0.1.
    let mut held = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        held.push(half_open("127.0.0.2", orbit).await);
    }

    // While all of them are open, signed dispatches and /health are served.
    for _ in 0..5 {
        let reply = stack
            .dispatch(json!({"plugin": "echo", "intent": "t", "input": "still here"}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let health = reqwest::get(format!("{}/health", stack.orbit_url))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Past the per-client cap the flood was told why and closed at once.
    let refused = until_closed(held.last_mut().unwrap(), Duration::from_secs(10)).await;
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("OVERLOADED"), "{refused}");
    drop(held);
}

#[tokio::test]
async fn unfinished_and_idle_connections_are_closed_at_the_header_timeout() {
    let stack = Stack::start_with(|c| c.header_read_timeout_ms = 300).await;
    let orbit = orbit_addr(&stack);
    // Half a request line, then nothing: closed, unanswered.
    let mut unfinished = half_open("127.0.0.1", orbit).await;
    assert!(
        until_closed(&mut unfinished, Duration::from_secs(30))
            .await
            .is_empty()
    );
    // A kept-alive connection after its answer, left idle: closed too.
    let mut idle = TcpStream::connect(orbit).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut idle, Duration::from_secs(30)).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_body_trickled_slowly_is_cut_off_at_the_deadline() {
    let stack = Stack::start_with(|c| c.body_read_timeout_ms = 500).await;
    let orbit = orbit_addr(&stack);
    let stream = TcpStream::connect(orbit).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(b"POST /dispatch HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    // One byte every 200 ms for up to two minutes: never a gap past the
    // deadline, so only a deadline on the whole body stops it. Were there
    // none, no answer would come while it trickles (the guard below).
    let trickle = tokio::spawn(async move {
        for _ in 0..600 {
            if write.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut answer))
        .await
        .expect("the server answers while the body is still trickling")
        .unwrap();
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("cannot read the request body"), "{answer}");
}
