//! The accept loop of the gRPC server, bounded: at most `max_connections` open at once (the
//! next client waits in the kernel's backlog until one closes), a connection idle for
//! `idle_timeout` is closed (`idle.rs`), and an accept error (out of file descriptors) backs
//! off instead of spinning, as tonic's own loop would.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::idle::{Activity, IdleTimer};

/// How long the loop pauses after an accept error before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A connection holding one of the listener's slots until it is dropped.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    activity: Arc<Activity>,
    idle: IdleTimer,
}

/// What a request learns about its connection (in its extensions).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    /// The addresses.
    #[allow(dead_code)]
    pub(crate) tcp: TcpConnectInfo,
    /// Its requests in flight, for the idle timeout.
    pub(crate) activity: Arc<Activity>,
}

/// The accepted connections of `listener`, at most `max_connections` open at once, each with
/// `TCP_NODELAY` set (a resume is a small frame on a long-lived stream, and Nagle's algorithm
/// with delayed ACKs held each one for about 40 ms).
pub(crate) fn incoming(
    listener: TcpListener,
    max_connections: usize,
    idle_timeout: Duration,
) -> impl Stream<Item = io::Result<Connection>> {
    let slots = Arc::new(Semaphore::new(max_connections));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    let activity = Activity::new();
                    let connection = Connection {
                        stream,
                        _slot: slot,
                        idle: IdleTimer::new(Arc::clone(&activity), idle_timeout),
                        activity,
                    };
                    return Some((Ok(connection), (listener, slots)));
                }
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS and aborted handshakes: none is fatal. Pause so a
                    // full descriptor table does not turn this loop into a busy spin.
                    tracing::warn!(error = %e, backoff = ?ACCEPT_BACKOFF, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            tcp: self.stream.connect_info(),
            activity: Arc::clone(&self.activity),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.idle.expired(cx) {
            // End of stream: the server closes a connection nobody uses.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, StreamExt};

    use super::*;

    #[tokio::test]
    async fn a_connection_past_the_limit_waits_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(incoming(listener, 1, Duration::from_secs(60)));
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        // The second client connects (the kernel's backlog takes it) but is not accepted
        // while the first holds the only slot.
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut next = incoming.next();
        assert!(
            (&mut next).now_or_never().is_none(),
            "accepted past the limit"
        );
        drop(first);
        let second = next.await.unwrap().unwrap();
        assert!(second.stream.nodelay().unwrap());
    }
}
