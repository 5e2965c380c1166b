//! What `/metrics` reports, in Prometheus text format: one place that names every metric.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const OPEN_CONNECTIONS: &str = "duo_open_connections";
const ACTIVE_ROOMS: &str = "duo_active_rooms";
const RELAYED: &str = "duo_messages_relayed_total";
const REJECTED: &str = "duo_messages_rejected_total";
const RELAY_LATENCY: &str = "duo_relay_latency_seconds";
const BUILD_INFO: &str = "duo_build_info";

/// Installs the process-wide recorder; `/metrics` renders from the handle.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        // From 20 µs (a relay on an idle server) to 1 s (a reader that fell far behind).
        .set_buckets_for_metric(
            Matcher::Full(RELAY_LATENCY.into()),
            &[0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0],
        )?
        .install_recorder()?;
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!(OPEN_CONNECTIONS).set(0.0);
    gauge!(ACTIVE_ROOMS).set(0.0);
    Ok(handle)
}

pub fn connection_opened() {
    gauge!(OPEN_CONNECTIONS).increment(1.0);
}

pub fn connection_closed() {
    gauge!(OPEN_CONNECTIONS).decrement(1.0);
}

pub fn active_rooms(count: usize) {
    gauge!(ACTIVE_ROOMS).set(count as f64);
}

pub fn relayed(message_type: &'static str) {
    counter!(RELAYED, "message_type" => message_type).increment(1);
}

pub fn rejected(code: &'static str) {
    counter!(REJECTED, "code" => code).increment(1);
}

/// From reading a frame off one socket to writing it to the other.
pub fn relay_latency(latency: Duration) {
    histogram!(RELAY_LATENCY).record(latency.as_secs_f64());
}
