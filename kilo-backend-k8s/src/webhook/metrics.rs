//! The webhook's metrics, with upstream's names and labels. Label values
//! come only from fixed sets (a request can never add a series): the HTTP method is one of the
//! standard methods or `other`, the admission operation one of Kubernetes' or `other`, and the
//! handler is always `/validate`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the Prometheus text format 0.0.4 (the default).
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `Content-Type` of OpenMetrics text 1.0.0 (when the scraper asks for it).
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `admission_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `other`.
    pub operation: &'static str,
    /// `allowed` or `denied`.
    pub response: &'static str,
}

/// Labels of `http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The handler: `/validate`.
    pub handler: &'static str,
    /// The HTTP method (`GET`, `POST`, ...) or `other`.
    pub method: &'static str,
}

/// The label of an admission operation: Kubernetes' operations as they are, anything else
/// `other`.
pub fn operation_label(operation: &str) -> &'static str {
    match operation {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

/// The label of an HTTP method: the standard methods as they are, anything else `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    const NAMES: [&str; 9] =
        ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    KNOWN.iter().position(|m| m == method).map_or("other", |i| NAMES[i])
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
            "The number of admission requests, by operation and response",
            admission_requests.clone(),
        );
        registry.register(
            "http_requests",
            "The number of HTTP requests, by handler and method",
            http_requests.clone(),
        );
        registry.register(
            "errors",
            "The number of requests answered with an error",
            errors.clone(),
        );
        WebhookMetrics { registry, admission_requests, http_requests, errors }
    }
}

impl WebhookMetrics {
    /// Counts an admission decision; `operation` is the request's, labelled by
    /// [`operation_label`].
    pub fn admission(&self, operation: &str, allowed: bool) {
        let response = if allowed { "allowed" } else { "denied" };
        let labels = AdmissionLabels { operation: operation_label(operation), response };
        self.admission_requests.get_or_create(&labels).inc();
    }

    /// Counts an HTTP request to `/validate`, labelled by [`method_label`].
    pub fn http(&self, method: &http::Method) {
        let labels = HttpLabels { handler: "/validate", method: method_label(method) };
        self.http_requests.get_or_create(&labels).inc();
    }

    /// The metrics in the Prometheus text format 0.0.4 ([`PROMETHEUS_TEXT`]).
    pub fn encode(&self) -> String {
        prometheus_text(&self.encode_openmetrics())
    }

    /// The metrics in the OpenMetrics text format ([`OPENMETRICS_TEXT`]).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// OpenMetrics text as Prometheus text 0.0.4: a counter family is named with its `_total`
/// suffix in `# HELP` and `# TYPE`, and there is no `# UNIT` or `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(&name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(line.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_text_names_counters_with_their_total_suffix_and_has_no_eof() {
        let metrics = WebhookMetrics::default();
        metrics.admission("CREATE", true);
        metrics.http(&http::Method::POST);
        assert_eq!(
            metrics.encode(),
            "# HELP admission_requests_total The number of admission requests, by operation and response.\n\
             # TYPE admission_requests_total counter\n\
             admission_requests_total{operation=\"CREATE\",response=\"allowed\"} 1\n\
             # HELP http_requests_total The number of HTTP requests, by handler and method.\n\
             # TYPE http_requests_total counter\n\
             http_requests_total{handler=\"/validate\",method=\"POST\"} 1\n\
             # HELP errors_total The number of requests answered with an error.\n\
             # TYPE errors_total counter\n\
             errors_total 0\n"
        );
        assert!(metrics.encode_openmetrics().ends_with("# EOF\n"));
    }

    #[test]
    fn labels_come_from_fixed_sets() {
        assert_eq!(operation_label("UPDATE"), "UPDATE");
        assert_eq!(operation_label("update"), "other");
        assert_eq!(operation_label("OP-17"), "other");
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
        assert_eq!(method_label(&http::Method::from_bytes(b"M17").unwrap()), "other");
    }
}
