//! `--log-as-json`: one JSON object per line with daprd's keys, so log pipelines built for daprd read ward's lines
//! unchanged: `time` (RFC 3339), `level`, `msg`, `scope`, `type` (`log`), `app_id`, `instance` (host name), `ver`,
//! plus each event's own fields (API log lines carry `method`, `path`, `status`, …), and `trace_id` / `span_id` when the
//! line is written inside a traced request. Hand-written because
//! `tracing-subscriber`'s JSON layout (`timestamp`, `fields.message`, `target`) is not daprd's.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The per-process part of every line.
pub struct DaprJson {
    pub app_id: String,
    pub instance: String,
}

impl DaprJson {
    pub fn new(app_id: &str) -> DaprJson {
        let instance = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        DaprJson { app_id: app_id.to_owned(), instance }
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
}

/// `ward_sidecar::watcher` → `ward.sidecar.watcher` (daprd's scopes read `dapr.runtime.http`).
fn scope(target: &str) -> String {
    target.replace("::", ".").replacen("ward_", "ward.", 1)
}

impl<S, N> FormatEvent<S, N> for DaprJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        let time =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        line.insert("time".into(), Value::String(time));
        line.insert("level".into(), Value::String(event.metadata().level().as_str().to_ascii_lowercase()));
        let msg = fields.0.remove("message").unwrap_or(Value::String(String::new()));
        line.insert("msg".into(), msg);
        line.insert("scope".into(), Value::String(scope(event.metadata().target())));
        line.insert("type".into(), Value::String("log".into()));
        line.insert("app_id".into(), Value::String(self.app_id.clone()));
        line.insert("instance".into(), Value::String(self.instance.clone()));
        line.insert("ver".into(), Value::String(env!("CARGO_PKG_VERSION").into()));
        // Inside a traced request (tracing on), the line names its trace and span, so logs and traces join.
        if let Some((trace_id, span_id)) = ward_sidecar::otel::current_ids() {
            line.insert("trace_id".into(), Value::String(trace_id));
            line.insert("span_id".into(), Value::String(span_id));
        }
        for (key, value) in fields.0 {
            // An event's own field never overwrites one of daprd's keys.
            line.entry(key).or_insert(value);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_like_daprd() {
        assert_eq!(scope("ward_sidecar::watcher"), "ward.sidecar.watcher");
        assert_eq!(scope("h2::proto"), "h2.proto");
    }
}
