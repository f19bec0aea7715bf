//! Pub/sub topic scopes, as Dapr's `pkg/scopes` and `IsOperationAllowed`: component metadata
//! `publishingScopes` / `subscriptionScopes` (`"app1=t1,t2;app2="`), `allowedTopics` and `protectedTopics`
//! (`"t1,t2"`), keys matched case-insensitively, spaces ignored.
//!
//! The decision, in order: a topic not in `allowedTopics` (when set) is denied; a topic that is not protected, for
//! an app without an entry in the scope list, is allowed; otherwise only the topics listed for the app are allowed
//! (`app=` denies every topic). Pure and total: no I/O, no error for any input.

use std::collections::{BTreeMap, BTreeSet};

/// Which list applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicOperation {
    Publish,
    Subscribe,
}

impl TopicOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            TopicOperation::Publish => "publish",
            TopicOperation::Subscribe => "subscribe",
        }
    }
}

/// One pubsub component's topic scopes, compiled once when the component loads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicScopes {
    /// app id → topics it may publish (an app listed with no topics may publish none).
    publishing: BTreeMap<String, BTreeSet<String>>,
    subscription: BTreeMap<String, BTreeSet<String>>,
    /// `allowedTopics`: when not empty, the only topics anyone may use.
    allowed: BTreeSet<String>,
    /// `protectedTopics`: usable only by apps that list them.
    protected: BTreeSet<String>,
}

/// Dapr's metadata keys.
pub const PUBLISHING_SCOPES: &str = "publishingScopes";
pub const SUBSCRIPTION_SCOPES: &str = "subscriptionScopes";
pub const ALLOWED_TOPICS: &str = "allowedTopics";
pub const PROTECTED_TOPICS: &str = "protectedTopics";

impl TopicScopes {
    /// Compiles the scopes from a component's metadata (`get` looks a key up case-insensitively).
    pub fn from_metadata<'a>(get: impl Fn(&str) -> Option<&'a str>) -> TopicScopes {
        TopicScopes {
            publishing: parse_scopes(get(PUBLISHING_SCOPES).unwrap_or_default()),
            subscription: parse_scopes(get(SUBSCRIPTION_SCOPES).unwrap_or_default()),
            allowed: parse_list(get(ALLOWED_TOPICS).unwrap_or_default()),
            protected: parse_list(get(PROTECTED_TOPICS).unwrap_or_default()),
        }
    }

    /// Whether `app_id` may `operation` on `topic`.
    pub fn is_allowed(&self, app_id: &str, topic: &str, operation: TopicOperation) -> bool {
        if !self.allowed.is_empty() && !self.allowed.contains(topic) {
            return false;
        }
        let scopes = match operation {
            TopicOperation::Publish => &self.publishing,
            TopicOperation::Subscribe => &self.subscription,
        };
        match scopes.get(app_id) {
            None => !self.protected.contains(topic),
            Some(topics) => topics.contains(topic),
        }
    }

    /// True when nothing is configured (every app may use every topic).
    pub fn is_open(&self) -> bool {
        self.publishing.is_empty()
            && self.subscription.is_empty()
            && self.allowed.is_empty()
            && self.protected.is_empty()
    }
}

fn strip_spaces(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fn parse_list(value: &str) -> BTreeSet<String> {
    strip_spaces(value).split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

/// `"app1=t1,t2;app2="`: entries without `=` are ignored, as Dapr's parser does.
fn parse_scopes(value: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut scopes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in strip_spaces(value).split(';') {
        let Some((app, topics)) = entry.split_once('=') else { continue };
        if app.is_empty() {
            continue;
        }
        scopes.entry(app.to_owned()).or_default().extend(parse_list(topics));
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(pairs: &[(&str, &str)]) -> TopicScopes {
        let map: BTreeMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        TopicScopes::from_metadata(|key| map.get(&key.to_ascii_lowercase()).map(String::as_str))
    }

    use TopicOperation::{Publish, Subscribe};

    #[test]
    fn nothing_configured_allows_everything() {
        let s = scopes(&[]);
        assert!(s.is_open());
        assert!(s.is_allowed("a", "t", Publish) && s.is_allowed("a", "t", Subscribe));
    }

    /// The table of Dapr's pub/sub scopes documentation.
    #[test]
    fn daprs_documented_examples() {
        let s = scopes(&[
            ("publishingScopes", "app1=topic1;app2=topic2,topic3;app3="),
            ("subscriptionScopes", "app2=;app3=topic1"),
        ]);
        let table = [
            ("app1", "topic1", true, true),
            ("app1", "topic2", false, true),
            ("app1", "topic3", false, true),
            ("app2", "topic1", false, false),
            ("app2", "topic2", true, false),
            ("app2", "topic3", true, false),
            ("app3", "topic1", false, true),
            ("app3", "topic2", false, false),
            ("app3", "topic3", false, false),
            ("app4", "topic1", true, true),
        ];
        for (app, topic, publish, subscribe) in table {
            assert_eq!(s.is_allowed(app, topic, Publish), publish, "{app} publish {topic}");
            assert_eq!(s.is_allowed(app, topic, Subscribe), subscribe, "{app} subscribe {topic}");
        }
    }

    #[test]
    fn allowed_and_protected_topics() {
        let s = scopes(&[
            ("allowedTopics", " topic1, topic2 ,topic3"),
            ("protectedTopics", "topic3"),
            ("publishingScopes", "app1=topic3"),
        ]);
        assert!(!s.is_allowed("app1", "other", Publish), "not in allowedTopics");
        assert!(s.is_allowed("app2", "topic1", Publish), "unprotected, no entry");
        assert!(!s.is_allowed("app2", "topic3", Publish), "protected, not listed");
        assert!(s.is_allowed("app1", "topic3", Publish), "protected and listed");
        assert!(!s.is_allowed("app1", "topic1", Publish), "listed app: only its topics");
        assert!(!s.is_allowed("app1", "topic3", Subscribe), "protected for subscribers too");
    }

    #[test]
    fn keys_are_case_insensitive_and_garbage_is_harmless() {
        let s = scopes(&[("PUBLISHINGSCOPES", "app1=a;;=b;junk;app1=c")]);
        assert!(s.is_allowed("app1", "a", Publish) && s.is_allowed("app1", "c", Publish));
        assert!(!s.is_allowed("app1", "b", Publish));
        assert!(s.is_allowed("", "b", Publish), "an entry without an app id is ignored");
    }
}
