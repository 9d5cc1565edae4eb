//! The agent's HTTP endpoints: `/healthz` (the process serves), `/readyz` (every kernel probe is
//! attached and the stages run) and `/metrics` (the agent's own counters in the Prometheus text
//! format), for kubelet probes and Prometheus scrapes; `/inventory` (the API inventory as
//! JSON) and `/openapi/{service}` (the OpenAPI document reconstructed from a service's
//! traffic), for people and `apiscope inventory`.

use std::{fmt, net::SocketAddr, sync::Arc};

use agent_common::Counter;
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use tokio::net::TcpListener;

use super::health::AgentHealth;
use crate::{
    analysis::{events::unix_ms_now, inventory::SharedInventory},
    capture::TlsStack,
};

/// The `server:` section of the configuration.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address of `/healthz`, `/readyz` and `/metrics`, e.g. `127.0.0.1:9750`; `off` for none.
    pub listen: Listen,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: Listen::On(SocketAddr::from(([127, 0, 0, 1], 9750))),
        }
    }
}

/// Where the endpoints are served: an address, or `off`.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub enum Listen {
    /// Not served.
    Off,
    /// Served on this address.
    On(SocketAddr),
}

impl TryFrom<String> for Listen {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(Self::Off),
            address => address.parse().map(Self::On).map_err(|_| {
                format!("`{text}` is not an address such as 127.0.0.1:9750, nor `off`")
            }),
        }
    }
}

impl From<Listen> for String {
    fn from(listen: Listen) -> String {
        match listen {
            Listen::Off => "off".to_owned(),
            Listen::On(address) => address.to_string(),
        }
    }
}

/// Binds `address` and serves the endpoints on the current runtime until the task is dropped;
/// returns the bound address (the port may have been 0) and the serving task.
pub async fn start(
    address: SocketAddr,
    health: Arc<AgentHealth>,
    inventory: Option<SharedInventory>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(HealthCollector(Arc::clone(&health))));
    let state = Arc::new(ServerState {
        health,
        registry,
        inventory,
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/inventory", get(inventory_view))
        .route("/openapi/{service}", get(openapi))
        .with_state(state);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            log::error!("HTTP endpoints stopped: {error}");
        }
    });
    Ok((bound, task))
}

struct ServerState {
    health: Arc<AgentHealth>,
    registry: Registry,
    inventory: Option<SharedInventory>,
}

fn no_inventory() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no inventory: the agent runs with --dump only\n",
    )
        .into_response()
}

async fn inventory_view(State(state): State<Arc<ServerState>>) -> Response {
    let Some(inventory) = &state.inventory else {
        return no_inventory();
    };
    let inventory = inventory
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Json(inventory.view(unix_ms_now())).into_response()
}

async fn openapi(State(state): State<Arc<ServerState>>, Path(service): Path<String>) -> Response {
    let Some(inventory) = &state.inventory else {
        return no_inventory();
    };
    let document = inventory
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .openapi(&service);
    match document {
        Some(document) => Json(document).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no endpoint of service `{service}` was seen\n"),
        )
            .into_response(),
    }
}

/// Ready once the probes are attached and the stages run, whichever probe groups are off: a
/// node without one of them is still observed, and restarting the agent would not bring it
/// back. The groups that are off are named in the body.
async fn readyz(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    if !state.health.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: probes not attached\n".to_owned(),
        );
    }
    let groups = state.health.probe_groups();
    if groups.off.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::OK,
            format!("ready; probe groups off: {}\n", groups.off.join(", ")),
        )
    }
}

async fn metrics(State(state): State<Arc<ServerState>>) -> impl IntoResponse {
    let mut text = String::new();
    match encode(&mut text, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {error}\n"),
        ),
    }
}

/// Reads [`AgentHealth`] at each scrape.
#[derive(Debug)]
struct HealthCollector(Arc<AgentHealth>);

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let health = &self.0;
        let mut family = encoder.encode_descriptor(
            "apiscope_kernel_events",
            "Kernel-side counters, by name: records sent, ring buffer full, reads failed, ...",
            None,
            MetricType::Counter,
        )?;
        for counter in Counter::ALL {
            let labels = [("counter", counter.name())];
            ConstCounter::new(health.kernel_total(counter))
                .encode(family.encode_family(&labels)?)?;
        }
        counter(
            &mut encoder,
            "apiscope_records_malformed",
            "Ring-buffer records that could not be decoded.",
            health.records_malformed(),
        )?;
        counter(
            &mut encoder,
            "apiscope_connections_evicted",
            "Connections dropped from the full stream table.",
            health.connections_evicted(),
        )?;
        counter(
            &mut encoder,
            "apiscope_exec_holds_expired",
            "Processes held at exec or at a TLS library's mapping (the file new to the agent) \
             that were continued at the bound, before their TLS uprobes were attached: their \
             first TLS calls may be missed.",
            health.exec_holds_expired(),
        )?;
        let export = &health.export;
        for (name, help, outcomes) in [
            (
                "apiscope_export_spans",
                "Spans handed to OTLP export, by outcome: exported, dropped (queue full), failed.",
                export.spans_by_outcome(),
            ),
            (
                "apiscope_export_events",
                "Events handed to OTLP export, by outcome: exported, dropped (queue full), failed.",
                export.events_by_outcome(),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (outcome, count) in outcomes {
                ConstCounter::new(count).encode(family.encode_family(&[("outcome", outcome)])?)?;
            }
        }
        counter(
            &mut encoder,
            "apiscope_export_spans_not_sampled",
            "Calls whose span the sampler left out (export.otlp.sampling, OTEL_TRACES_SAMPLER); \
             their metrics, inventory and findings count all the same.",
            export
                .spans_not_sampled
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "apiscope_export_retries",
            "Span and event exports that failed and were tried again (collector unreachable, \
             overloaded or restarting).",
            export
                .export_retries
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "apiscope_export_metric_failures",
            "Metric exports the collector did not accept.",
            export
                .metric_exports_failed
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        let mut family = encoder.encode_descriptor(
            "apiscope_security_findings",
            "Security findings, by rule and lane.",
            None,
            MetricType::Counter,
        )?;
        for (rule, lane, count) in health.findings.snapshot() {
            let labels = [("rule", rule.as_str()), ("lane", lane)];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        if let Some(rules) = health.rules.get() {
            counter(
                &mut encoder,
                "apiscope_rule_reloads_rejected",
                "Rule pack changes rejected (the previous rules stayed active).",
                rules.rejected(),
            )?;
            gauge(
                &mut encoder,
                "apiscope_rules_kill_switch",
                "1 while a rule pack's kill switch stops every rule.",
                u64::from(rules.current().kill_switch),
            )?;
        }
        gauge(
            &mut encoder,
            "apiscope_event_batches_queued",
            "Batches of kernel records waiting for the stream stage.",
            health.event_batches_queued(),
        )?;
        let tls = health.tls_coverage();
        let mut family = encoder.encode_descriptor(
            "apiscope_probes_attached",
            "Probes attached: kernel programs, and files with TLS uprobes (OpenSSL and GnuTLS \
             copies, Go programs).",
            None,
            MetricType::Gauge,
        )?;
        let attached = [
            ("kernel", health.kernel_probes()),
            ("openssl_files", tls.openssl.attached),
            ("gnutls_files", tls.gnutls.attached),
            ("go_programs", tls.go.attached),
        ];
        for (kind, count) in attached {
            ConstGauge::new(count as i64).encode(family.encode_family(&[("kind", kind)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "apiscope_tls_stack_unsupported",
            "Files using a TLS stack that are not probed (a release or layout the agent does \
             not know): their TLS connections are seen, their plaintext is not.",
            None,
            MetricType::Gauge,
        )?;
        for stack in TlsStack::ALL {
            let count = tls.of(stack).unsupported;
            ConstGauge::new(count as i64)
                .encode(family.encode_family(&[("stack", stack.name())])?)?;
        }
        let groups = health.probe_groups();
        let mut family = encoder.encode_descriptor(
            "apiscope_probe_groups",
            "Kernel probe groups by state: on, or off (the kernel refused them).",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in [("on", groups.on), ("off", groups.off.len() as u64)] {
            ConstGauge::new(count as i64).encode(family.encode_family(&[("state", state)])?)?;
        }
        gauge(
            &mut encoder,
            "apiscope_ready",
            "1 once every kernel probe is attached and the stages run.",
            u64::from(health.is_ready()),
        )
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let health = Arc::new(AgentHealth::default());
        let (address, task) = start("127.0.0.1:0".parse().unwrap(), Arc::clone(&health), None)
            .await
            .unwrap();
        assert!(get(address, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready(true);
        health.set_probes(
            29,
            crate::capture::TlsCoverage {
                openssl: crate::capture::StackCoverage {
                    attached: 2,
                    unsupported: 0,
                },
                gnutls: crate::capture::StackCoverage::default(),
                go: crate::capture::StackCoverage {
                    attached: 1,
                    unsupported: 3,
                },
            },
        );
        health.set_kernel(&[(Counter::RingBufferFull, 7)]);
        assert!(get(address, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(address, "/metrics").await;
        for line in [
            "apiscope_kernel_events_total{counter=\"ring_buffer_full\"} 7",
            "apiscope_probes_attached{kind=\"kernel\"} 29",
            "apiscope_probes_attached{kind=\"openssl_files\"} 2",
            "apiscope_probes_attached{kind=\"go_programs\"} 1",
            "apiscope_tls_stack_unsupported{stack=\"go\"} 3",
            "apiscope_ready 1",
            "apiscope_export_spans_total{outcome=\"dropped\"} 0",
            "# EOF",
        ] {
            assert!(metrics.contains(line), "{line} missing in\n{metrics}");
        }
        assert!(get(address, "/nope").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }
}
