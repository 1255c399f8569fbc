//! A bound port that axum serves, plain or over TLS.
//!
//! Over TLS, handshakes run in their own tasks (at most [`MAX_HANDSHAKES`] at once, each given
//! [`HANDSHAKE_TIMEOUT`]), and only finished ones reach the server: a client that connects and
//! says nothing costs a task for ten seconds, not the listener.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use crate::tls::{NetError, ServerTls};

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes a listener runs at once; more clients wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;

/// Where a listener may serve without TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plaintext {
    /// On loopback addresses only: the default.
    LoopbackOnly,
    /// Anywhere: the operator said `--insecure-plaintext` (say, TLS ends in front of the
    /// process, or the network is the operator's alone).
    Anywhere,
}

/// A connection a [`Listener`] accepted, or a client opened.
pub enum Connection {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Connection {
    /// Splits the connection into halves for a reader and a writer task. A plain one splits
    /// for free; a TLS one shares its session between the halves behind a lock.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Connection::Plain(stream) => {
                let (read, write) = stream.into_split();
                (ReadHalf::Plain(read), WriteHalf::Plain(write))
            }
            Connection::Tls(stream) => {
                let (read, write) = tokio::io::split(*stream);
                (ReadHalf::Tls(read), WriteHalf::Tls(write))
            }
        }
    }
}

/// The reading half of a [`Connection`].
pub enum ReadHalf {
    Plain(tokio::net::tcp::OwnedReadHalf),
    Tls(tokio::io::ReadHalf<tokio_rustls::TlsStream<TcpStream>>),
}

/// The writing half of a [`Connection`].
pub enum WriteHalf {
    Plain(tokio::net::tcp::OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<tokio_rustls::TlsStream<TcpStream>>),
}

/// A bound port, plain or TLS; axum serves it (`axum::serve(listener, app)`).
pub struct Listener {
    local: SocketAddr,
    incoming: Incoming,
}

enum Incoming {
    Plain(TcpListener),
    /// Connections whose handshake finished, from the task that accepts and shakes hands; the
    /// task ends when this receiver is dropped.
    Tls(mpsc::Receiver<(Connection, SocketAddr)>),
}

impl Listener {
    /// Binds `address`. With `tls`, connections are TLS; without, the bound address must be a
    /// loopback one unless `plaintext` allows any. `flags` names the options that would give
    /// the listener TLS, for the error that refuses plain HTTP.
    pub async fn bind(
        address: &str,
        tls: Option<&ServerTls>,
        plaintext: Plaintext,
        flags: &'static str,
    ) -> Result<Listener, NetError> {
        let listen_error = |source| NetError::Listen { address: address.to_owned(), source };
        let listener = TcpListener::bind(address).await.map_err(listen_error)?;
        let local = listener.local_addr().map_err(listen_error)?;
        let incoming = match tls {
            Some(tls) => {
                let (ready, incoming) = mpsc::channel(64);
                tokio::spawn(accept_tls(listener, tls.acceptor(), ready));
                Incoming::Tls(incoming)
            }
            None if plaintext == Plaintext::LoopbackOnly && !local.ip().is_loopback() => {
                return Err(NetError::PlainOffLoopback { address: local, flags });
            }
            None => Incoming::Plain(listener),
        };
        Ok(Listener { local, incoming })
    }

    /// The bound address (the chosen port when `address` asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.local
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.incoming, Incoming::Tls(_))
    }

    /// The next connection: for the shuffle's own protocol, which axum does not serve.
    pub async fn next(&mut self) -> (Connection, SocketAddr) {
        match &mut self.incoming {
            Incoming::Plain(listener) => loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        return (Connection::Plain(stream), peer);
                    }
                    Err(error) => accept_failed(error).await,
                }
            },
            Incoming::Tls(incoming) => match incoming.recv().await {
                Some(accepted) => accepted,
                // The accepting task ends only once this receiver is gone.
                None => std::future::pending().await,
            },
        }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Accepts connections and runs their handshakes until `ready`'s receiver is dropped.
async fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ready: mpsc::Sender<(Connection, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            permit = handshakes.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = ready.closed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = ready.closed() => return,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((Connection::Tls(Box::new(stream.into())), peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "a TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "a TLS handshake timed out"),
            }
        });
    }
}

/// An accept that failed (the process is out of file descriptors, or a connection was reset
/// before it was taken): wait a moment rather than spin.
async fn accept_failed(error: io::Error) {
    tracing::warn!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Forwards an `AsyncRead` to whichever stream the enum holds.
macro_rules! forward_read {
    ($type:ty) => {
        impl AsyncRead for $type {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
                    Self::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Forwards an `AsyncWrite` to whichever stream the enum holds.
macro_rules! forward_write {
    ($type:ty) => {
        impl AsyncWrite for $type {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
                    Self::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
                    Self::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Plain(stream) => stream.is_write_vectored(),
                    Self::Tls(stream) => stream.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
                    Self::Tls(stream) => Pin::new(stream).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
                    Self::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_read!(Connection);
forward_read!(ReadHalf);
forward_write!(Connection);
forward_write!(WriteHalf);
