//! Large but legitimate files load; files over a limit are refused with a message that names the file, the limit,
//! its value and how to raise it (issue 25, defect 5). The parser's alias-bomb protection stays.

use std::path::Path;

/// `policies` one-operation-each… here three operations each, as in the issue: about 3 MB of YAML for 10,000.
fn configuration(policies: usize) -> String {
    let mut yaml = String::from(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: big\nspec:\n  accessControl:\n    \
         defaultAction: deny\n    trustDomain: public\n    policies:\n",
    );
    for n in 0..policies {
        yaml.push_str(&format!(
            "    - appId: app-{n}\n      namespace: default\n      trustDomain: public\n      defaultAction: deny\n      \
             operations:\n      - name: /orders/{n}\n        httpVerb: ['GET']\n        action: allow\n      \
             - name: /stock/*\n        httpVerb: ['GET', 'POST']\n        action: allow\n      \
             - name: /admin/**\n        httpVerb: ['*']\n        action: deny\n"
        ));
    }
    yaml
}

#[test]
fn ten_thousand_policies_of_three_operations_load() {
    let yaml = configuration(10_000);
    assert!(yaml.len() > 2_500_000, "about 3 MB: {}", yaml.len());
    let loaded = ward_config::configuration_from_yaml(Path::new("big.yaml"), yaml.as_bytes());
    let configuration = loaded.unwrap_or_else(|e| panic!("{e}"));
    let policies = configuration.access_control.as_ref().and_then(|acl| acl.policies.as_ref()).map(Vec::len);
    assert_eq!(policies, Some(10_000));
}

#[test]
fn a_file_over_the_size_cap_names_file_limit_value_and_how_to_raise_it() {
    let mut yaml = configuration(15_000);
    yaml.push_str(&"# padding\n".repeat(1000));
    let err = ward_config::configuration_from_yaml(Path::new("huge.yaml"), yaml.as_bytes()).unwrap_err().to_string();
    assert!(err.starts_with("huge.yaml: "), "{err}");
    assert!(err.contains(&yaml.len().to_string()), "the value: {err}");
    assert!(err.contains("4194304"), "the limit: {err}");
    assert!(err.contains("WARD_MAX_CONFIG_FILE_BYTES"), "how to raise it: {err}");
}

#[test]
fn an_alias_bomb_is_still_refused_with_the_budget_named() {
    // Each level refers to the one above nine times: 9^9 nodes once expanded.
    let mut yaml = String::from("apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: bomb\nspec:\n");
    yaml.push_str("  a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let above = format!("*a{}", level - 1);
        yaml.push_str(&format!("  a{level}: &a{level} [{}]\n", vec![above; 9].join(", ")));
    }
    let started = std::time::Instant::now();
    let err = ward_config::configuration_from_yaml(Path::new("bomb.yaml"), yaml.as_bytes()).unwrap_err().to_string();
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "refused in bounded time");
    assert!(err.starts_with("bomb.yaml"), "{err}");
    assert!(!err.contains("Nodes {"), "a sentence, not a debug dump: {err}");
    assert!(err.contains("limit"), "{err}");
}
