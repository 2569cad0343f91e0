//! Accepting HTTP connections: at most `max_connections` open at once, none holding its slot
//! longer than its timeouts allow, all of them drained on shutdown.
//!
//! `axum::serve` keeps a connection for as long as the client likes, so a few hundred clients
//! that send half a request, or nothing, exhaust the file descriptors and `/healthz` with them.
//! Here the daemon runs hyper's HTTP/1.1 connections itself, each in a task that also watches
//! where the connection stands ([`Phase`]) and closes it when it overstays:
//!
//! - waiting for a request head longer than `header_read_timeout` (from accept, or from the
//!   first byte of a request on a kept-alive connection): closed;
//! - kept alive without a new request for `idle_timeout`: closed;
//! - reading a body: the body extractor's deadline (`body_read_timeout`, a 408).
//!
//! hyper's own `header_read_timeout` is not used: its clock also runs while a kept-alive
//! connection waits for the next request, so an idle connection could never outlive it, and
//! the two limits could not be set apart (as nginx and Go's `http.Server` allow).
//!
//! HTTP/2 is not offered: herald's clients are HTTP/1.1 (the TMS, the CLI), and h2c (HTTP/2
//! without TLS) would need the same limits built a second time.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::extract::BodyReadTimeout;

/// How long connections may hold on, and how many may be open.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// From accept, or from the first byte of a request on a kept-alive connection, until its
    /// head (request line and headers) is complete.
    pub header_read_timeout: Duration,
    /// From the end of a request's head until its body is complete (enforced by the body
    /// extractor, which answers 408).
    pub body_read_timeout: Duration,
    /// From the end of a response until the next request's first byte.
    pub idle_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, closes the
/// connections that are between requests, lets the others finish their exchange, and returns
/// once all are closed or `drain_within` has passed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain_within: Duration,
) {
    let limits = Arc::new(limits);
    // One permit per open connection: a connection is accepted only with a permit in hand, so
    // at the cap the next one waits in the kernel's backlog, not in herald's memory.
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: wait a little for some to close
                    // rather than spin on a listener that stays readable.
                    tracing::warn!(error = %e, "cannot accept a connection; retrying shortly");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (app, limits, stopping) = (app.clone(), limits.clone(), stopping.clone());
        tokio::spawn(async move {
            serve_connection(stream, app, &limits, stopping).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(());
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain_within, slots.acquire_many(all))
        .await
        .is_err()
    {
        let open = limits.max_connections - slots.available_permits();
        tracing::warn!(
            open,
            "connections still busy after the shutdown grace; they are cut"
        );
    }
}

/// How long the accept loop waits after an error that is not the client's (e.g. `EMFILE`).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Errors of one incoming connection, not of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Runs one connection until it ends, overstays a limit, or shutdown closes it.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: &ConnectionLimits,
    mut stopping: watch::Receiver<()>,
) {
    let progress = Arc::new(Progress::new());
    let io = TokioIo::new(WatchedStream {
        stream,
        progress: progress.clone(),
    });
    let body_read_timeout = BodyReadTimeout(limits.body_read_timeout);
    let service = {
        let progress = progress.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            progress.head_received();
            request.extensions_mut().insert(body_read_timeout);
            let (app, progress) = (app.clone(), progress.clone());
            async move {
                let response = app.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|body| ResponseBody { body, progress }))
            }
        })
    };
    let mut connection = pin!(
        http1::Builder::new()
            .header_read_timeout(None) // see the module documentation
            .serve_connection(io, service)
    );
    let mut draining = false;
    loop {
        let deadline = progress.deadline(limits);
        tokio::select! {
            // Polled first: bytes that arrived by the deadline are read, not cut off.
            biased;
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = progress.moved.notified() => {}
            () = sleep_until(deadline) => {
                if progress.deadline(limits).is_some_and(|at| at <= Instant::now()) {
                    tracing::debug!(phase = ?progress.phase(), "closing a connection that overstayed");
                    return;
                }
            }
            _ = stopping.changed(), if !draining => {
                draining = true;
                match progress.phase() {
                    Phase::Head(_) | Phase::Idle(_) => return,
                    // Finish the exchange, then close.
                    Phase::Exchange => connection.as_mut().graceful_shutdown(),
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head to be complete, since accept or since the first byte after
    /// an idle wait.
    Head(Instant),
    /// A request is being answered: from its complete head until its response has been handed
    /// to hyper in full. No deadline of the watchdog's: the body extractor bounds the body,
    /// and herald's own work is not the client's fault.
    Exchange,
    /// Kept alive since the last response, no byte of a next request yet.
    Idle(Instant),
}

/// A connection's phase, moved by the three parties that see it change: the stream (bytes
/// arrive), the service (a head is complete) and the response body (it has been sent).
struct Progress {
    phase: Mutex<Phase>,
    /// Wakes the watchdog to recompute its deadline.
    moved: Notify,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            phase: Mutex::new(Phase::Head(Instant::now())),
            moved: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = phase;
        self.moved.notify_one();
    }

    fn bytes_read(&self) {
        if let Phase::Idle(_) = self.phase() {
            self.set(Phase::Head(Instant::now()));
        }
    }

    fn head_received(&self) {
        self.set(Phase::Exchange);
    }

    fn response_sent(&self) {
        self.set(Phase::Idle(Instant::now()));
    }

    /// When the connection has overstayed, in its current phase.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        match self.phase() {
            Phase::Head(since) => Some(since + limits.header_read_timeout),
            Phase::Exchange => None,
            Phase::Idle(since) => Some(since + limits.idle_timeout),
        }
    }
}

/// The client's TCP stream, reporting when bytes arrive.
struct WatchedStream {
    stream: TcpStream,
    progress: Arc<Progress>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            self.progress.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
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

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A response body that reports, when hyper is done with it (sent in full or given up), that
/// the exchange is over.
struct ResponseBody {
    body: Body,
    progress: Arc<Progress>,
}

impl http_body::Body for ResponseBody {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.progress.response_sent();
    }
}
