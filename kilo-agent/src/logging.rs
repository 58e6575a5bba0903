//! Logging in upstream's shape (contract 7): by default one JSON object a line on stdout, as
//! go-kit's `log.NewJSONLogger` writes it (keys sorted; `ts` in RFC 3339 UTC, `caller` as
//! `file:line`, `level` in lower case, `msg`, and the event's fields at the top level), so that
//! queries written against upstream's agent keep matching. `--log-format human` is for people and
//! writes colour codes only to a terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The shape of log lines (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// go-kit's JSON lines (upstream's).
    Json,
    /// Human-readable lines, coloured only on a terminal.
    Human,
}

/// `--log-level` names none of upstream's levels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log level {0:?} unknown; possible values are: all, debug, info, warn, error, none")]
pub struct UnknownLevel(pub String);

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: upstream's stream, for the agent and the webhook.
    Stdout,
    /// Standard error: for subcommands whose standard output is their result (`kg pubkey`).
    Stderr,
}

/// Installs the global subscriber. `level` is upstream's `--log-level` (`all`, `debug`, `info`,
/// `warn`, `error`, `none`).
pub fn init(level: &str, format: Format, stream: Stream) -> Result<(), UnknownLevel> {
    let filter = match level {
        "all" => "trace".to_string(),
        // rustables reports every nftables attribute it does not model at info, on every listing
        // of the rule set (hundreds of lines a minute): its warnings still show.
        "debug" | "info" => format!("{level},rustables=warn"),
        "warn" | "error" => level.to_string(),
        "none" => "off".to_string(),
        other => return Err(UnknownLevel(other.to_string())),
    };
    install(&filter, format, stream);
    Ok(())
}

/// Installs the global subscriber for a command-line tool that runs the agent's loop
/// (`kgctl connect`): Kilo's own messages from `info` up, nothing from the libraries below
/// (their failures reach the user as the command's error).
pub fn init_for_command(format: Format, stream: Stream) {
    install("off,kilo_agent=info,kilo_net_linux=info,kilo_backend_k8s=warn", format, stream);
}

fn install(filter: &str, format: Format, stream: Stream) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (format, stream) {
        (Format::Json, Stream::Stdout) => {
            builder.event_format(GoKitJson).with_writer(std::io::stdout).init()
        }
        (Format::Json, Stream::Stderr) => {
            builder.event_format(GoKitJson).with_writer(std::io::stderr).init()
        }
        (Format::Human, Stream::Stdout) => {
            builder.with_ansi(std::io::stdout().is_terminal()).with_writer(std::io::stdout).init()
        }
        (Format::Human, Stream::Stderr) => {
            builder.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init()
        }
    }
}

/// go-kit's JSON line.
#[derive(Debug, Clone, Copy)]
pub struct GoKitJson;

impl<S, N> FormatEvent<S, N> for GoKitJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let metadata = event.metadata();
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        let mut line = fields.0;
        if let Some(message) = line.remove("message") {
            line.insert("msg".into(), message);
        }
        // Records of the `log` crate carry their origin as fields.
        let log_file = line.remove("log.file");
        let log_line = line.remove("log.line");
        line.remove("log.target");
        line.remove("log.module_path");
        let (file, number) = match (log_file, log_line) {
            (Some(serde_json::Value::String(f)), l) => {
                (Some(f), l.and_then(|l| l.as_u64()).and_then(|l| u32::try_from(l).ok()))
            }
            _ => (metadata.file().map(str::to_string), metadata.line()),
        };
        line.insert("level".into(), level(*metadata.level()).into());
        line.insert("caller".into(), caller(file.as_deref(), number).into());
        line.insert("ts".into(), rfc3339_utc(std::time::SystemTime::now()).into());
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// go-kit's level names; `trace` (our `--log-level all`) has none there and shows as `debug`.
fn level(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

/// `file:line` as go-kit's `DefaultCaller` (the source file's name, here relative to its crate's
/// `src`, so that `agent/mod.rs` and `wireguard/mod.rs` stay apart).
fn caller(file: Option<&str>, line: Option<u32>) -> String {
    let file = file.unwrap_or("unknown");
    let short = match file.rfind("/src/") {
        Some(at) => &file[at + 5..],
        None => file.strip_prefix("src/").unwrap_or(file),
    };
    match line {
        Some(line) => format!("{short}:{line}"),
        None => short.to_string(),
    }
}

/// The event's fields as JSON values.
struct Fields(BTreeMap<String, serde_json::Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
}

/// `time` in Go's `time.RFC3339Nano` in UTC (`2026-12-03T07:50:49.123456789Z`, trailing zeros of
/// the fraction dropped), as go-kit's `DefaultTimestampUTC`.
pub fn rfc3339_utc(time: std::time::SystemTime) -> String {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    let nanos = since.subsec_nanos();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn timestamps_are_gos_rfc3339_nano_in_utc() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_796_284_249, 120_000_000);
        assert_eq!(rfc3339_utc(t), "2026-12-03T07:50:49.12Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 1);
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:00.000000001Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_107_542_399);
        assert_eq!(rfc3339_utc(t), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn callers_are_file_and_line_within_the_crate() {
        assert_eq!(caller(Some("kilo-net-linux/src/agent/mod.rs"), Some(92)), "agent/mod.rs:92");
        assert_eq!(caller(Some("bins/kg/src/run.rs"), Some(7)), "run.rs:7");
        assert_eq!(
            caller(Some("/root/.cargo/registry/src/index/kube-runtime-1/src/watcher.rs"), Some(3)),
            "watcher.rs:3"
        );
        assert_eq!(caller(None, None), "unknown");
    }

    #[test]
    fn levels_are_go_kits_names() {
        let names: Vec<_> =
            [Level::TRACE, Level::DEBUG, Level::INFO, Level::WARN, Level::ERROR].map(level).into();
        assert_eq!(names, ["debug", "debug", "info", "warn", "error"]);
    }
}
