//! CloudEvents as Dapr writes and reads them (components-contrib `pubsub/envelope.go`, dapr
//! `pkg/runtime/pubsub/cloudevents.go`): the envelope a publish makes, the canonical bytes `wardsig` signs, and the
//! expiry check on delivery.
//!
//! Owns the JSON shape only. Does not sign (`signature.rs`), decide scopes, or talk to brokers.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value};

/// `type` of an event Dapr made.
pub const EVENT_TYPE: &str = "com.dapr.event.sent";
/// `application/cloudevents+json`: the publisher sent a whole CloudEvent; also the delivery content type.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// The extension attribute that carries the publisher's signature (issue 14, verified publishers).
pub const WARDSIG: &str = "wardsig";

/// Why a publish body could not become a CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not a CloudEvent JSON object")]
    NotACloudEvent,
    #[error("metadata.ttlInSeconds: {0:?} is not a non-negative number of seconds")]
    Ttl(String),
}

/// What a publish says, before it becomes an event.
pub struct PublishInput<'a> {
    pub pubsub: &'a str,
    pub topic: &'a str,
    pub app_id: &'a str,
    pub data: &'a [u8],
    /// The request's `Content-Type` (HTTP) or `data_content_type` (gRPC), if any.
    pub content_type: Option<&'a str>,
    /// `metadata.*` of the request, without the prefix.
    pub metadata: &'a BTreeMap<String, String>,
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    /// Dapr's bulk publish uses its own `type`.
    pub event_type: &'static str,
}

/// Whether `metadata.rawPayload` asks for the bytes without an envelope.
pub fn is_raw_payload(metadata: &BTreeMap<String, String>) -> bool {
    metadata.get("rawPayload").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

fn is_text(media: &str) -> bool {
    media.starts_with("text/") || is_json(media) || media == "application/xml" || media.ends_with("+xml")
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Builds the event for one publish (never for `rawPayload`).
pub fn build(input: &PublishInput<'_>) -> Result<Map<String, Value>, EnvelopeError> {
    let media = input.content_type.map(media_type).filter(|m| !m.is_empty());
    let mut event = if media.as_deref() == Some(CLOUDEVENTS_JSON) {
        // The caller's own CloudEvent: its fields are kept, topic and pubsubname are ours.
        match serde_json::from_slice::<Value>(input.data) {
            Ok(Value::Object(map)) => map,
            _ => return Err(EnvelopeError::NotACloudEvent),
        }
    } else {
        let mut event = Map::new();
        let content_type = input.content_type.filter(|c| !c.trim().is_empty()).unwrap_or("text/plain");
        event.insert("datacontenttype".into(), content_type.into());
        let media = media.unwrap_or_else(|| "text/plain".to_owned());
        let data = if is_json(&media) {
            // JSON is embedded as JSON when it parses (as Dapr), otherwise carried as a string.
            serde_json::from_slice::<Value>(input.data)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(input.data).into_owned()))
        } else if is_text(&media) {
            match std::str::from_utf8(input.data) {
                Ok(text) => Value::String(text.to_owned()),
                Err(_) => Value::Null,
            }
        } else {
            Value::Null
        };
        if data.is_null() {
            event.insert("data_base64".into(), base64::engine::general_purpose::STANDARD.encode(input.data).into());
        } else {
            event.insert("data".into(), data);
        }
        event
    };
    let defaults: [(&str, Value); 4] = [
        ("id", uuid::Uuid::new_v4().to_string().into()),
        ("specversion", "1.0".into()),
        ("source", input.app_id.into()),
        ("type", input.event_type.into()),
    ];
    for (key, value) in defaults {
        if event.get(key).is_none_or(|v| v.as_str().is_none_or(str::is_empty)) {
            event.insert(key.into(), value);
        }
    }
    event.entry("time").or_insert_with(|| now_rfc3339().into());
    if let Some(traceparent) = input.traceparent {
        event.entry("traceparent").or_insert_with(|| traceparent.into());
        event.entry("traceid").or_insert_with(|| traceparent.into());
    }
    if let Some(tracestate) = input.tracestate {
        event.entry("tracestate").or_insert_with(|| tracestate.into());
    }
    // `cloudevent.*` metadata may set these; never topic, pubsubname, data or the signature.
    for key in ["id", "source", "type", "subject", "traceid", "traceparent", "tracestate"] {
        if let Some(value) = input.metadata.get(&format!("cloudevent.{key}")) {
            event.insert(key.into(), value.clone().into());
        }
    }
    event.insert("topic".into(), input.topic.into());
    event.insert("pubsubname".into(), input.pubsub.into());
    event.remove(WARDSIG);
    if let Some(ttl) = input.metadata.get("ttlInSeconds") {
        let seconds: u64 = ttl.trim().parse().map_err(|_| EnvelopeError::Ttl(ttl.clone()))?;
        let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds.min(i64::MAX as u64) as i64);
        let text = expires.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        event.insert("expiration".into(), text.into());
    }
    Ok(event)
}

/// Whether the event's `expiration` (RFC 3339) has passed. An unparsable expiry counts as expired (fail closed:
/// the publisher asked for a limit we cannot read).
pub fn is_expired(event: &Map<String, Value>) -> bool {
    let Some(expiration) = event.get("expiration") else { return false };
    let Some(text) = expiration.as_str() else { return true };
    match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        Ok(at) => at <= time::OffsetDateTime::now_utc(),
        Err(_) => true,
    }
}

/// The canonical bytes of `value`: object keys sorted by their UTF-8 bytes, no insignificant whitespace, strings
/// and numbers as `serde_json` writes them. For the documents ward signs (string attributes and JSON data whose
/// numbers are integers or shortest-form floats) this is RFC 8785 (JCS); `docs/pubsub.md` says how to reproduce it.
pub fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing a string to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, key);
                out.push(b':');
                canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// The bytes `wardsig` covers: every attribute but `wardsig` itself, and the data.
pub fn signed_bytes(event: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut unsigned = event.clone();
    unsigned.remove(WARDSIG);
    canonical(&Value::Object(unsigned), &mut out);
    out
}

/// The `data` of an event as the bytes a gRPC app receives (`TopicEventRequest.data`), and its content type.
pub fn data_bytes(event: &Map<String, Value>) -> Vec<u8> {
    if let Some(Value::String(b64)) = event.get("data_base64") {
        return base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default();
    }
    match event.get("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => serde_json::to_vec(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        data: &'a [u8],
        content_type: Option<&'a str>,
        metadata: &'a BTreeMap<String, String>,
    ) -> PublishInput<'a> {
        PublishInput {
            pubsub: "bus",
            topic: "orders",
            app_id: "checkout",
            data,
            content_type,
            metadata,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            tracestate: None,
            event_type: EVENT_TYPE,
        }
    }

    #[test]
    fn envelope_fields_as_dapr() {
        let none = BTreeMap::new();
        let e = build(&input(br#"{"orderId": 1}"#, Some("application/json"), &none)).unwrap();
        assert_eq!(e["data"], serde_json::json!({"orderId": 1}));
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["source"], "checkout");
        assert_eq!(e["type"], EVENT_TYPE);
        assert_eq!(e["specversion"], "1.0");
        assert_eq!((e["topic"].as_str(), e["pubsubname"].as_str()), (Some("orders"), Some("bus")));
        assert_eq!(e["traceparent"], e["traceid"]);
        assert!(e["id"].as_str().is_some_and(|id| id.len() == 36) && e.contains_key("time"));

        let e = build(&input(b"hello", None, &none)).unwrap();
        assert_eq!((e["data"].as_str(), e["datacontenttype"].as_str()), (Some("hello"), Some("text/plain")));
        let e = build(&input(&[0, 159, 146, 150], Some("application/octet-stream"), &none)).unwrap();
        assert_eq!(e["data_base64"], "AJ+Slg==");
        assert_eq!(data_bytes(&e), [0, 159, 146, 150]);
    }

    #[test]
    fn overrides_may_not_touch_topic_pubsub_or_data_and_caller_events_keep_their_fields() {
        let metadata: BTreeMap<String, String> = [
            ("cloudevent.id", "my-id"),
            ("cloudevent.source", "elsewhere"),
            ("cloudevent.topic", "other"),
            ("cloudevent.data", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let e = build(&input(b"hi", Some("text/plain"), &metadata)).unwrap();
        assert_eq!((e["id"].as_str(), e["source"].as_str()), (Some("my-id"), Some("elsewhere")));
        assert_eq!((e["topic"].as_str(), e["data"].as_str()), (Some("orders"), Some("hi")));

        let none = BTreeMap::new();
        let own = br#"{"id":"1","source":"mine","type":"t","specversion":"1.0","topic":"x","data":{"a":1},"wardsig":"forged"}"#;
        let e = build(&input(own, Some("application/cloudevents+json; charset=utf-8"), &none)).unwrap();
        assert_eq!((e["id"].as_str(), e["source"].as_str(), e["type"].as_str()), (Some("1"), Some("mine"), Some("t")));
        assert_eq!(e["topic"], "orders", "topic is always the one published to");
        assert!(!e.contains_key(WARDSIG), "a caller can never supply the signature");
        assert_eq!(build(&input(b"[1]", Some(CLOUDEVENTS_JSON), &none)), Err(EnvelopeError::NotACloudEvent));
    }

    #[test]
    fn ttl_and_expiry() {
        let metadata: BTreeMap<String, String> = [("ttlInSeconds".to_owned(), "60".to_owned())].into();
        let e = build(&input(b"x", None, &metadata)).unwrap();
        assert!(!is_expired(&e));
        let mut past = e.clone();
        past.insert("expiration".into(), "2020-01-01T00:00:00Z".into());
        assert!(is_expired(&past));
        past.insert("expiration".into(), "soon".into());
        assert!(is_expired(&past), "an unreadable expiry fails closed");
        let bad: BTreeMap<String, String> = [("ttlInSeconds".to_owned(), "-1".to_owned())].into();
        assert!(matches!(build(&input(b"x", None, &bad)), Err(EnvelopeError::Ttl(_))));
    }

    #[test]
    fn canonical_form_sorts_keys_at_every_level_and_ignores_the_signature() {
        let v: Value = serde_json::from_str(r#"{"b": {"z": 1, "a": [2, {"y": "é", "x": null}]}, "a": "\n"}"#).unwrap();
        let mut out = Vec::new();
        canonical(&v, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"a":"\n","b":{"a":[2,{"x":null,"y":"é"}],"z":1}}"#);
        let mut with_sig = v.as_object().unwrap().clone();
        let plain = signed_bytes(&with_sig);
        with_sig.insert(WARDSIG.into(), "sig".into());
        assert_eq!(signed_bytes(&with_sig), plain);
    }
}
