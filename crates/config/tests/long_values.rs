//! Issue 26 defect 3: an over-long scalar anywhere in a resource file gives one error line under 300 characters
//! that still names the file, the resource and the field, and echoes at most ~100 characters of the value.

use std::path::Path;

use ward_config::{ResourceSet, configuration_from_yaml};

const HUGE_LEN: usize = 70 * 1024;

fn component(type_: &str, version: &str, name: &str, init_timeout: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_}\n  version: {version}\n  initTimeout: {init_timeout}\n"
    )
}

fn configuration(skew: &str, td: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  mtls:\n    allowedClockSkew: {skew}\n  accessControl:\n    trustDomain: {td}\n    defaultAction: deny\n"
    )
}

fn assert_short(case: &str, line: &str, field: &str) {
    assert!(line.chars().count() < 300, "{case}: {} chars: {line}", line.chars().count());
    assert!(!line.contains('\n'), "{case}: {line}");
    assert!(line.starts_with("res.yaml"), "{case}: names the file: {line}");
    assert!(line.contains(field), "{case}: names {field}: {line}");
    assert!(!line.contains(&"v".repeat(101)), "{case}: echoes more than 100 characters: {line}");
}

#[test]
fn a_70_kb_scalar_gives_a_short_error_line_wherever_it_is() {
    let huge = "v".repeat(HUGE_LEN);
    let path = Path::new("res.yaml");
    let components = [
        ("type", component(&huge, "v1", "store", "1s"), "spec.type"),
        ("initTimeout", component("state.in-memory", "v1", "store", &huge), "spec.initTimeout"),
        ("name", component("state.in-memory", "v1", &format!("{huge}/x"), "1s"), "metadata.name"),
        ("kind", format!("apiVersion: dapr.io/v1alpha1\nkind: {huge}\nmetadata:\n  name: x\n"), "kind"),
        ("apiVersion", format!("apiVersion: {huge}\nkind: Component\nmetadata:\n  name: x\n"), "apiVersion"),
    ];
    for (case, yaml, field) in components {
        match ResourceSet::from_yaml(path, &yaml, None) {
            Ok(_) => {
                // Some kinds of resource are skipped rather than refused (an unknown kind); that is not an echo.
                assert!(matches!(case, "kind"), "{case}: accepted");
            }
            Err(err) => assert_short(case, &err.to_string(), field),
        }
    }
    let configurations = [("allowedClockSkew", configuration(&huge, "public"), "spec.mtls.allowedClockSkew")];
    for (case, yaml, field) in configurations {
        let err = configuration_from_yaml(path, yaml.as_bytes()).expect_err(case);
        assert_short(case, &err.to_string(), field);
    }
}
