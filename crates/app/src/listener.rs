//! The accept loop of the gRPC server, bounded: at most `max_connections` open at once (the
//! next client waits in the kernel's backlog until one closes), a connection idle for
//! `idle_timeout` is closed (`idle.rs`), and an accept error (out of file descriptors) backs
//! off instead of spinning, as tonic's own loop would. With TLS, each handshake runs on its
//! own task within `HANDSHAKE_TIMEOUT`, so a client that connects and stalls holds up no one;
//! the verified client certificate's names travel with the connection ([`PeerIdentity`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use rendezvous_grpc_api::auth::PeerIdentity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::idle::{Activity, IdleTimer};

/// How long the loop pauses after an accept error before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a client may take to complete the TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bytes of a connection: plain TCP or TLS over it.
#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection holding one of the listener's slots until it is dropped.
#[derive(Debug)]
pub(crate) struct Connection {
    io: Io,
    peer: Option<PeerIdentity>,
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
    /// The names of the client certificate it presented (TLS with client certificates).
    pub(crate) peer: Option<PeerIdentity>,
}

impl Connection {
    fn new(io: Io, peer: Option<PeerIdentity>, slot: OwnedSemaphorePermit, idle: Duration) -> Self {
        let activity = Activity::new();
        Connection {
            io,
            peer,
            _slot: slot,
            idle: IdleTimer::new(Arc::clone(&activity), idle),
            activity,
        }
    }

    fn tcp(&self) -> &TcpStream {
        match &self.io {
            Io::Plain(stream) => stream,
            Io::Tls(tls) => tls.get_ref().0,
        }
    }
}

/// Accepts one connection once a slot is free, backing off on accept errors. Cancel-safe:
/// dropping it loses nothing (`TcpListener::accept` is cancel-safe; the slot goes back).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                return (stream, slot);
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS and aborted handshakes: none is fatal. Pause so a
                // full descriptor table does not turn this loop into a busy spin.
                tracing::warn!(error = %e, backoff_ms = ACCEPT_BACKOFF.as_millis() as u64, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The TLS handshake of one accepted connection; `None` when it fails or times out (logged
/// at debug: a port scanner is not news).
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    idle: Duration,
) -> Option<Connection> {
    let peer_addr = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer_addr, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(peer = %peer_addr, timeout_ms = HANDSHAKE_TIMEOUT.as_millis() as u64, "TLS handshake timed out");
            return None;
        }
    };
    let peer = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        // The chain was verified by the handshake; only its names are read here.
        Some(leaf) => match PeerIdentity::from_der(leaf) {
            Ok(identity) => Some(identity),
            Err(e) => {
                tracing::debug!(peer = %peer_addr, error = %e, "client certificate unreadable");
                return None;
            }
        },
        None => None,
    };
    Some(Connection::new(Io::Tls(Box::new(tls)), peer, slot, idle))
}

/// The accepted connections of `listener`, at most `max_connections` open (or in their
/// handshake) at once, each with `TCP_NODELAY` set (a resume is a small frame on a
/// long-lived stream, and Nagle's algorithm with delayed ACKs held each one for about 40 ms).
/// With `tls`, only connections whose handshake succeeded come out.
pub(crate) fn incoming(
    listener: TcpListener,
    max_connections: usize,
    idle_timeout: Duration,
    tls: Option<TlsAcceptor>,
) -> impl Stream<Item = io::Result<Connection>> {
    let slots = Arc::new(Semaphore::new(max_connections));
    let handshakes: JoinSet<Option<Connection>> = JoinSet::new();
    futures_util::stream::unfold(
        (listener, slots, handshakes),
        move |(listener, slots, mut handshakes)| {
            let tls = tls.clone();
            async move {
                loop {
                    tokio::select! {
                        Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                            if let Ok(Some(connection)) = done {
                                return Some((Ok(connection), (listener, slots, handshakes)));
                            }
                        }
                        (stream, slot) = accept(&listener, &slots) => match &tls {
                            None => {
                                let connection =
                                    Connection::new(Io::Plain(stream), None, slot, idle_timeout);
                                return Some((Ok(connection), (listener, slots, handshakes)));
                            }
                            Some(acceptor) => {
                                handshakes.spawn(handshake(acceptor.clone(), stream, slot, idle_timeout));
                            }
                        },
                    }
                }
            }
        },
    )
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            tcp: self.tcp().connect_info(),
            activity: Arc::clone(&self.activity),
            peer: self.peer.clone(),
        }
    }
}

/// Runs `$call` on the connection's stream, whichever it is.
macro_rules! on_io {
    ($self:ident, |$io:ident| $call:expr) => {
        match &mut $self.io {
            Io::Plain($io) => {
                let $io = Pin::new($io);
                $call
            }
            Io::Tls($io) => {
                let $io = Pin::new($io.as_mut());
                $call
            }
        }
    };
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
        on_io!(self, |io| io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_io!(self, |io| io.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, |io| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, |io| io.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_io!(self, |io| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
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
        let mut incoming = Box::pin(incoming(listener, 1, Duration::from_secs(60), None));
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
        assert!(second.tcp().nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_stalled_handshake_holds_up_no_one_and_the_client_certificate_travels() {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = CertificateDer::from(ca.cert.der().to_vec());
        let key = PrivateKeyDer::try_from(ca.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots.clone()),
            provider.clone(),
        )
        .build()
        .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.clone()], key.clone_key())
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let mut incoming = Box::pin(incoming(
            listener,
            8,
            Duration::from_secs(60),
            Some(acceptor),
        ));
        // Connects and never says a word.
        let _stalled = TcpStream::connect(addr).await.unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert], key)
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let handshake = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.unwrap()
        });
        let accepted = tokio::time::timeout(Duration::from_secs(5), incoming.next())
            .await
            .expect("the second client was held up by the stalled one")
            .unwrap()
            .unwrap();
        let _client = handshake.await.unwrap();
        let info = accepted.connect_info();
        assert_eq!(
            info.peer.map(|p| p.sans),
            Some(vec!["localhost".to_owned()])
        );
    }
}
