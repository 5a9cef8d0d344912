//! [`DelayRelay`]: a TCP relay on loopback that delays what the upstream
//! server sends back, to give a test a slow link to a real service (a
//! server far away, or a congested network) without a mock.
//!
//! Depends on Tokio alone, so that a crate that cannot depend on this one
//! (a store crate this one depends on) can include the file with
//! `#[path = "..."] mod relay;`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Bytes read at once.
const CHUNK: usize = 16 * 1024;

/// Listens on a free port of `127.0.0.1` and relays every connection to
/// the upstream address. What the client sends goes out at once; what the
/// upstream sends back reaches the client `delay` after it arrived, in
/// order. Dropping the relay closes every relayed connection.
#[derive(Debug)]
pub struct DelayRelay {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        // The relayed connections' tasks belong to the accept task's set.
        self.accept.abort();
    }
}

impl DelayRelay {
    /// Starts relaying to `upstream` (`HOST:PORT`), delaying its replies by
    /// `delay`.
    ///
    /// # Errors
    /// No loopback port can be bound.
    pub async fn start(upstream: &str, delay: Duration) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let upstream = upstream.to_string();
        let accept = tokio::spawn(async move {
            let mut relays = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                relays.spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, delay).await;
                    }
                });
            }
        });
        Ok(Self { addr, accept })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn relay(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_tx.shutdown().await;
    };
    // Replies are stamped when they arrive and written out `delay` later.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_replies = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let write_replies = async {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if client_tx.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = client_tx.shutdown().await;
    };
    tokio::join!(upstream, read_replies, write_replies);
}
