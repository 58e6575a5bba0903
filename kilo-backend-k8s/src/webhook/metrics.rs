//! The webhook's metrics, with upstream's names (upstream-kilo.md 3.4).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of `admission_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `CREATE`, `UPDATE`, ...
    pub operation: String,
    /// `allowed` or `denied`.
    pub response: String,
}

/// Labels of `http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The handler (`validate`).
    pub handler: String,
    /// The HTTP method.
    pub method: String,
}

/// The webhook's counters and the registry that exposes them.
#[derive(Debug)]
pub struct WebhookMetrics {
    registry: Registry,
    /// `admission_requests_total{operation,response}`.
    pub admission_requests: Family<AdmissionLabels, Counter>,
    /// `http_requests_total{handler,method}`.
    pub http_requests: Family<HttpLabels, Counter>,
    /// `errors_total`: requests answered with an error status.
    pub errors: Counter,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let admission_requests = Family::<AdmissionLabels, Counter>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let errors = Counter::default();
        registry.register(
            "admission_requests",
            "The number of admission requests, by operation and response.",
            admission_requests.clone(),
        );
        registry.register(
            "http_requests",
            "The number of HTTP requests, by handler and method.",
            http_requests.clone(),
        );
        registry.register(
            "errors",
            "The number of requests answered with an error.",
            errors.clone(),
        );
        WebhookMetrics { registry, admission_requests, http_requests, errors }
    }
}

impl WebhookMetrics {
    /// Counts an admission decision.
    pub fn admission(&self, operation: &str, allowed: bool) {
        let response = if allowed { "allowed" } else { "denied" };
        let labels =
            AdmissionLabels { operation: operation.to_string(), response: response.to_string() };
        self.admission_requests.get_or_create(&labels).inc();
    }

    /// Counts an HTTP request.
    pub fn http(&self, handler: &str, method: &str) {
        let labels = HttpLabels { handler: handler.to_string(), method: method.to_string() };
        self.http_requests.get_or_create(&labels).inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
