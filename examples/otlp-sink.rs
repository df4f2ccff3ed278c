//! A minimal OTLP/gRPC trace collector for benchmarks: accepts exports, counts spans, prints
//! the count every second (`spans N`). `otlp-sink [ADDR]` (default 127.0.0.1:14317).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:14317".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("otlp-sink listening on {}", listener.local_addr()?);
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            println!("spans {}", c.load(Ordering::Relaxed));
        }
    });
    tonic::transport::Server::builder()
        .serve_with_incoming(
            TraceServiceServer::new(Sink(count)),
            tonic::transport::server::TcpIncoming::from(listener),
        )
        .await?;
    Ok(())
}
