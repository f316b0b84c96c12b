//! The front door under a flood: a client that opens connections and never
//! finishes a request cannot take Orbit from anyone else.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_do_not_starve_other_clients() {
    let stack = Stack::start_with(|c| {
        c.front_door.header_read_timeout_ms = 2_000;
        c.front_door.max_connections_per_client = 100;
    })
    .await;
    let orbit: SocketAddr = stack.orbit_url["http://".len()..].parse().unwrap();

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

    // The ones it admitted are closed by the header-read timeout.
    let admitted = until_closed(&mut held[0], Duration::from_secs(30)).await;
    assert!(
        !String::from_utf8_lossy(&admitted).contains("200 OK"),
        "an unfinished request got no answer"
    );
    drop(held);

    // Once they are gone, the same address is served again.
    let mut again = half_open("127.0.0.2", orbit).await;
    again.write_all(b"TP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let answer = String::from_utf8_lossy(&until_closed(&mut again, Duration::from_secs(30)).await)
        .into_owned();
    assert!(!answer.starts_with("HTTP/1.1 503"), "{answer}");
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_cut_off() {
    let stack = Stack::start_with(|c| c.front_door.body_read_timeout_ms = 500).await;
    let orbit: SocketAddr = stack.orbit_url["http://".len()..].parse().unwrap();
    let mut stream = TcpStream::connect(orbit).await.unwrap();
    stream
        .write_all(b"POST /dispatch HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"plu")
        .await
        .unwrap();
    // The rest never comes: past the body-read timeout the server answers
    // and closes.
    let answer = until_closed(&mut stream, Duration::from_secs(30)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("cannot read the request body") && answer.contains("INVALID_REQUEST"),
        "{answer}"
    );
}
