//! The OTLP/gRPC server of the end-to-end tests (which keep everything they receive) and of the
//! benchmarks' sink (which only counts it): one server, built on the official generated OTLP
//! services (`opentelemetry-proto`) and `tonic`, and a [`Collector`] that says what is done
//! with each export.
//!
//! [`OtlpServer::start`] binds the address it is given (127.0.0.1:0 for a free port) and
//! serves the trace, metrics and logs services (gzip accepted) on a tokio runtime of its own,
//! in a thread of its own, so that its users stay synchronous. It returns once the socket
//! listens; it stops when dropped, cancelling open connections rather than waiting on a
//! client.

use std::{
    net::{SocketAddr, TcpListener},
    sync::mpsc,
    thread,
    time::Duration,
};

use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    },
    metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    },
    trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
};
use tonic::codec::CompressionEncoding;

/// How long [`OtlpServer::start`] waits for its server thread.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dropping the server waits for its thread to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest export accepted (the agent and collectors send far less).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// What a server does with each export it receives; an error is the status it answers with.
#[tonic::async_trait]
pub trait Collector: Clone + Send + Sync + 'static {
    /// A trace export.
    async fn traces(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<(), tonic::Status>;
    /// A metrics export.
    async fn metrics(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<(), tonic::Status>;
    /// A logs export.
    async fn logs(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<(), tonic::Status>;
}

/// The three OTLP services over one collector.
#[derive(Clone)]
struct Services<C>(C);

#[tonic::async_trait]
impl<C: Collector> TraceService for Services<C> {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.traces(request).await?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl<C: Collector> MetricsService for Services<C> {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.metrics(request).await?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl<C: Collector> LogsService for Services<C> {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.logs(request).await?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// A running server; stops when dropped.
pub struct OtlpServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl OtlpServer {
    /// Binds `addr` (port 0: a free one) and serves `collector` until dropped; returns once
    /// the server is being served.
    pub fn start<C: Collector>(addr: SocketAddr, collector: C) -> Result<Self, String> {
        let listener = TcpListener::bind(addr).map_err(|error| format!("bind {addr}: {error}"))?;
        let addr = listener
            .local_addr()
            .map_err(|error| format!("local address: {error}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|error| format!("non-blocking socket: {error}"))?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("otlp-server-{}", addr.port()))
            .spawn(move || {
                serve(listener, Services(collector), shutdown_rx, ready_tx);
                let _ = done_tx.send(());
            })
            .map_err(|error| format!("server thread: {error}"))?;
        let server = Self {
            addr,
            shutdown: Some(shutdown_tx),
            done: done_rx,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => Ok(server),
            Ok(Err(error)) => Err(format!("OTLP server on {addr}: {error}")),
            Err(_) => Err(format!(
                "OTLP server on {addr} did not start within {START_TIMEOUT:?}"
            )),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDRESS`, for an OTLP/gRPC exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for OtlpServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // The runtime is dropped with the thread, which cancels every connection task; do not
        // hang the caller on it all the same.
        if self.done.recv_timeout(STOP_TIMEOUT).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// The server thread: a current-thread runtime serving until `shutdown`.
fn serve<C: Collector>(
    listener: TcpListener,
    services: Services<C>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(format!("tokio runtime: {error}")));
            return;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                let _ = ready.send(Err(format!("tokio listener: {error}")));
                return;
            }
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(services.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                MetricsServiceServer::new(services.clone())
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                LogsServiceServer::new(services)
                    .accept_compressed(CompressionEncoding::Gzip)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(incoming);
        // The socket already listens (bound before this thread started), so connections made
        // from now on queue until the server polls them.
        let _ = ready.send(Ok(()));
        tokio::select! {
            result = server => {
                if let Err(error) = result {
                    eprintln!("OTLP server stopped: {error}");
                }
            }
            _ = shutdown => {}
        }
    });
    // Dropping the runtime here cancels the connection tasks.
}
