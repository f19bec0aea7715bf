//! Routing rules of a subscription (`routes.rules[{match, path}]`, `routes.default`): each `match` is a CEL
//! expression over the variable `event` (the CloudEvent as delivered), evaluated in order; the first that is true
//! names the path, else the default. Expressions are compiled once, when the subscription starts.
//!
//! CEL comes from the `cel` crate (cel-rust), the maintained Rust interpreter. An expression that fails to evaluate
//! (a missing field, a type error) counts as false, as in Dapr; one that does not compile refuses the
//! subscription.

use serde_json::{Map, Value};

/// Compiled routes.
pub(crate) struct Routes {
    rules: Vec<(cel::Program, String, String)>,
    default: Option<String>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<_> = self.rules.iter().map(|(_, expr, path)| (expr, path)).collect();
        f.debug_struct("Routes").field("rules", &rules).field("default", &self.default).finish()
    }
}

impl Routes {
    /// Compiles `(match, path)` rules; the error names the rule's index and the parser's message.
    pub(crate) fn compile(rules: &[(String, String)], default: Option<String>) -> Result<Routes, String> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, (expr, path)) in rules.iter().enumerate() {
            let program =
                cel::Program::compile(expr).map_err(|err| format!("routes.rules[{i}].match {expr:?}: {err}"))?;
            compiled.push((program, expr.clone(), path.clone()));
        }
        Ok(Routes { rules: compiled, default: default.filter(|d| !d.is_empty()) })
    }

    /// The path for `event`, if any rule or the default gives one.
    pub(crate) fn route(&self, event: &Map<String, Value>) -> Option<&str> {
        if !self.rules.is_empty() {
            let mut context = cel::Context::default();
            if context.add_variable("event", event).is_ok() {
                for (program, _, path) in &self.rules {
                    if matches!(program.execute(&context), Ok(cel::Value::Bool(true))) {
                        return Some(path);
                    }
                }
            }
        }
        self.default.as_deref()
    }

    /// Every path the subscription may deliver to (for the invocation guard, issue 14 / Dapr #8353).
    pub(crate) fn paths(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(_, _, p)| p.as_str()).chain(self.default.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn first_matching_rule_then_default() {
        let routes = Routes::compile(
            &[
                (r#"event.type == "widget""#.into(), "/widgets".into()),
                (r#"event.data.amount > 100"#.into(), "/big".into()),
            ],
            Some("/orders".into()),
        )
        .unwrap();
        assert_eq!(routes.route(&event(r#"{"type":"widget","data":{"amount":500}}"#)), Some("/widgets"));
        assert_eq!(routes.route(&event(r#"{"type":"order","data":{"amount":500}}"#)), Some("/big"));
        assert_eq!(routes.route(&event(r#"{"type":"order","data":{"amount":5}}"#)), Some("/orders"));
        // A missing field is false, not an error.
        assert_eq!(routes.route(&event(r#"{"type":"order","data":"text"}"#)), Some("/orders"));
        let no_default = Routes::compile(&[(r#"event.type == "x""#.into(), "/x".into())], None).unwrap();
        assert_eq!(no_default.route(&event(r#"{"type":"y"}"#)), None);
        assert_eq!(no_default.paths().collect::<Vec<_>>(), ["/x"]);
    }

    #[test]
    fn a_bad_expression_is_refused_naming_the_rule() {
        let err = Routes::compile(&[("event.type ==".into(), "/x".into())], None).unwrap_err();
        assert!(err.starts_with("routes.rules[0].match"), "{err}");
    }
}
