//! Prometheus metrics: exec counts and durations, errors by code (counted in this process since
//! it started), and the sandboxes by state (read from /run/agentbox at each scrape, never cached).
//! The warm pools' series come from the server's own pool counters.
//! Also the outermost middleware, which counts every error answer and rewrites the few that
//! come from axum or tower-http (413 of the body limit, 405) into the API's error shape.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentbox_runtime::persistent::{Health, State as SandboxState};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode, Recorded};
use crate::pool::PoolStats;
use crate::AppState;

/// Upper bounds (seconds) of the exec duration histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

const CODES: [ErrorCode; 8] = [
    ErrorCode::Unauthorized,
    ErrorCode::NotFound,
    ErrorCode::InvalidRequest,
    ErrorCode::MethodNotAllowed,
    ErrorCode::PayloadTooLarge,
    ErrorCode::QuotaExceeded,
    ErrorCode::SandboxFailed,
    ErrorCode::Internal,
];

/// The counters of this server process.
#[derive(Debug, Default)]
pub struct Metrics {
    exec_total: AtomicU64,
    /// Cumulative counts per bucket, then the +Inf bucket.
    exec_buckets: [AtomicU64; BUCKETS.len() + 1],
    exec_micros: AtomicU64,
    errors: [AtomicU64; CODES.len()],
}

impl Metrics {
    /// Counts one command run to its end (whatever its exit code).
    pub fn record_exec(&self, duration: Duration) {
        self.exec_total.fetch_add(1, Ordering::Relaxed);
        let seconds = duration.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.exec_buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.exec_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn record_error(&self, code: ErrorCode) {
        if let Some(i) = CODES.iter().position(|&c| c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, sandboxes: &[SandboxState]) -> String {
        let running = sandboxes
            .iter()
            .filter(|s| s.health() == Health::Running)
            .count();
        let failed = sandboxes.len() - running;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP agentbox_sandboxes Persistent sandboxes on this host, by state.\n\
             # TYPE agentbox_sandboxes gauge\n\
             agentbox_sandboxes{{state=\"running\"}} {running}\n\
             agentbox_sandboxes{{state=\"failed\"}} {failed}"
        );
        let total = self.exec_total.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP agentbox_exec_total Commands run through the API.\n\
             # TYPE agentbox_exec_total counter\n\
             agentbox_exec_total {total}\n\
             # HELP agentbox_exec_duration_seconds Wall-clock time of the commands run.\n\
             # TYPE agentbox_exec_duration_seconds histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.exec_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "agentbox_exec_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.exec_buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let sum = self.exec_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "agentbox_exec_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}\n\
             agentbox_exec_duration_seconds_sum {sum}\n\
             agentbox_exec_duration_seconds_count {cumulative}\n\
             # HELP agentbox_errors_total Error answers of the API, by code.\n\
             # TYPE agentbox_errors_total counter"
        );
        for (i, code) in CODES.iter().enumerate() {
            let n = self.errors[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "agentbox_errors_total{{code=\"{}\"}} {n}",
                code.as_str()
            );
        }
        out
    }
}

/// The warm pools' gauges and counters (one series per `[[pool]]`, labelled by its position and
/// image).
pub fn render_pools(pools: &[PoolStats]) -> String {
    let mut out = String::new();
    if pools.is_empty() {
        return out;
    }
    let label = |i: usize, p: &PoolStats| {
        let image = p.image.replace('\\', "\\\\").replace('"', "\\\"");
        format!("pool=\"{i}\",image=\"{image}\"")
    };
    type Series = (
        &'static str,
        &'static str,
        &'static str,
        fn(&PoolStats) -> u64,
    );
    let series: [Series; 5] = [
        (
            "agentbox_pool_size",
            "gauge",
            "Sandboxes a warm pool keeps ready.",
            |p| u64::from(p.size),
        ),
        (
            "agentbox_pool_ready",
            "gauge",
            "Pooled sandboxes booted and waiting now.",
            |p| p.ready as u64,
        ),
        (
            "agentbox_pool_claims_total",
            "counter",
            "Creates served by a pooled sandbox.",
            |p| p.warm,
        ),
        (
            "agentbox_pool_misses_total",
            "counter",
            "Creates of a pool's policy that found it empty and booted.",
            |p| p.cold,
        ),
        (
            "agentbox_pool_refill_failures_total",
            "counter",
            "Pooled sandboxes whose creation failed (logged; retried).",
            |p| p.refill_failures,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (i, p) in pools.iter().enumerate() {
            let _ = writeln!(out, "{name}{{{}}} {}", label(i, p), value(p));
        }
    }
    out
}

/// Counts error answers, and gives the API's error shape to those that lack it.
pub async fn count_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let code = match response.extensions().get::<Recorded>() {
        Some(Recorded(code)) => *code,
        None if status.is_client_error() || status.is_server_error() => {
            let code = match status {
                StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
                StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
                StatusCode::NOT_FOUND => ErrorCode::NotFound,
                s if s.is_client_error() => ErrorCode::InvalidRequest,
                _ => ErrorCode::Internal,
            };
            let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
            state.metrics.record_error(code);
            return ApiError::new(code, reason).into_response();
        }
        None => return response,
    };
    state.metrics.record_error(code);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_metric_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record_exec(Duration::from_millis(3));
        m.record_exec(Duration::from_millis(200));
        m.record_exec(Duration::from_secs(1000));
        m.record_error(ErrorCode::QuotaExceeded);
        let text = m.render(&[]);
        for line in [
            "agentbox_sandboxes{state=\"running\"} 0",
            "agentbox_sandboxes{state=\"failed\"} 0",
            "agentbox_exec_total 3",
            "agentbox_exec_duration_seconds_bucket{le=\"0.005\"} 1",
            "agentbox_exec_duration_seconds_bucket{le=\"0.25\"} 2",
            "agentbox_exec_duration_seconds_bucket{le=\"300\"} 2",
            "agentbox_exec_duration_seconds_bucket{le=\"+Inf\"} 3",
            "agentbox_exec_duration_seconds_count 3",
            "agentbox_errors_total{code=\"quota_exceeded\"} 1",
            "agentbox_errors_total{code=\"internal\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn pools_have_a_series_each() {
        assert_eq!(render_pools(&[]), "");
        let stats = PoolStats {
            image: "busy\"box".into(),
            size: 2,
            ready: 1,
            warm: 3,
            cold: 4,
            refills: 5,
            refill_failures: 6,
        };
        let text = render_pools(&[stats]);
        for line in [
            "agentbox_pool_size{pool=\"0\",image=\"busy\\\"box\"} 2",
            "agentbox_pool_ready{pool=\"0\",image=\"busy\\\"box\"} 1",
            "agentbox_pool_claims_total{pool=\"0\",image=\"busy\\\"box\"} 3",
            "agentbox_pool_misses_total{pool=\"0\",image=\"busy\\\"box\"} 4",
            "agentbox_pool_refill_failures_total{pool=\"0\",image=\"busy\\\"box\"} 6",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
