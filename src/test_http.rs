//! Test support for the two HTTP clients' unit tests (the load generator's and the delivery
//! sender's): reading whole requests off a socket, as a scripted server must.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads from `s` until `buffered` holds one whole request (its head, then content-length
/// bytes), and removes that request from `buffered`. False when the peer closed first.
pub async fn next_request(s: &mut TcpStream, buffered: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffered[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|v| v.trim().parse().expect("a numeric content-length"))
                .unwrap_or(0);
            if buffered.len() >= end + 4 + len {
                buffered.drain(..end + 4 + len);
                return true;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buffered.extend_from_slice(&chunk[..n]),
        }
    }
}
