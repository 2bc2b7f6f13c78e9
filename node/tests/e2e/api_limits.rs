//! The control API holds out against clients that connect and stop sending: with many
//! half-sent requests open a normal request is still served, the server closes the half-sent
//! ones after its header and body timeouts, and SIGTERM with more connections open than the API
//! serves at once still stops the node and removes `api-port`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::*;

/// Connections that send part of a request's headers and then nothing.
const HALF_SENT: usize = 24;

fn port(node: &Node) -> u16 {
    std::fs::read_to_string(node.dir.join("api-port")).unwrap().trim().parse().unwrap()
}

/// A connection sending `bytes` and then nothing more.
fn half_sent(port: u16, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(bytes).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    s
}

/// Reads what has arrived; true once the server has closed the connection.
fn closed(s: &mut TcpStream, got: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn half_sent_requests_time_out_and_do_not_starve_the_api() {
    let mut node = Node::start(100, &["--listen".into(), "/ip4/127.0.0.1/tcp/0".into()]);
    let port = port(&node);
    let token = std::fs::read_to_string(node.dir.join("api-token")).unwrap();

    let mut heads: Vec<TcpStream> = (0..HALF_SENT)
        .map(|_| half_sent(port, b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"))
        .collect();
    let body_head = format!(
        "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\n0123456789",
        token.trim()
    );
    let mut body = half_sent(port, body_head.as_bytes());

    // Served while the half-sent requests hold their connections.
    assert!(node.status()["node_id"].is_string());

    let mut body_answer = Vec::new();
    let mut body_closed = false;
    let mut head_answers = vec![Vec::new(); heads.len()];
    let mut heads_closed = vec![false; heads.len()];
    let closed_count = std::cell::Cell::new(0);
    wait_for_or(
        "the API to close the half-sent requests",
        Duration::from_secs(120),
        || {
            for (i, s) in heads.iter_mut().enumerate() {
                heads_closed[i] = heads_closed[i] || closed(s, &mut head_answers[i]);
            }
            closed_count.set(heads_closed.iter().filter(|c| **c).count());
            body_closed = body_closed || closed(&mut body, &mut body_answer);
            closed_count.get() == HALF_SENT && body_closed
        },
        || format!("{} of {HALF_SENT} header connections closed", closed_count.get()),
    );
    let answer = String::from_utf8_lossy(&body_answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "answer to a half-sent body: {answer}");
    assert!(answer.contains("request body not received"), "{answer}");
    assert!(node.status()["node_id"].is_string());

    // More connections than the API serves at once, every one silent; SIGTERM still stops
    // the node and takes its port file away.
    let _held: Vec<TcpStream> = (0..starling_node::api::API_CONNECTIONS_MAX + 20)
        .map(|_| half_sent(port, b"GET /sta"))
        .collect();
    let status = node.stop().expect("stopped");
    assert!(status.success(), "exit after SIGTERM with open connections: {status}");
    assert!(!node.dir.join("api-port").exists(), "api-port left behind");
}
