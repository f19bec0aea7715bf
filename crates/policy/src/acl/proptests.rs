//! The indexed operation trie gives the simple scan's answer (Dapr's: the first matching child in declaration
//! order at each level) for any set of names and any request, including nodes with more children than the index
//! threshold, literal `*` segments in requests, and globs declared before or after a literal sibling.

use proptest::prelude::*;

use super::{scan, trie};

/// Few distinct segments, so names share prefixes and collide often; enough literals to pass the index threshold.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["*", "**", "a*", "*b", "x*y", "a", "b", "ab", "axy"]).prop_map(str::to_owned),
        2 => (0..24u8).prop_map(|n| format!("s{n}")),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..5).prop_map(|segments| segments.join("/"))
}

fn request() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 1..6), any::<bool>())
        .prop_map(|(segments, leading)| format!("{}{}", if leading { "/" } else { "" }, segments.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn indexed_trie_decides_as_the_scan(names in prop::collection::vec(name(), 1..60),
                                        requests in prop::collection::vec(request(), 1..20)) {
        let mut indexed = trie::Node::default();
        let mut oracle = scan::Node::default();
        for (data, name) in names.iter().enumerate() {
            indexed.insert(name, data);
            oracle.insert(name, data);
        }
        for request in requests.iter().chain(&names) {
            prop_assert_eq!(indexed.search(request), oracle.search(request), "request {:?} names {:?}", request, names);
        }
    }
}

/// The case the index exists for: 10,000 operations, the matching one last, and wildcard siblings declared before
/// and after a literal one.
#[test]
fn many_operations_and_declaration_order() {
    let mut indexed = trie::Node::default();
    let mut oracle = scan::Node::default();
    let names: Vec<String> = (0..10_000).map(|n| format!("op{n}/x")).chain(["op*".to_owned()]).collect();
    for (data, name) in names.iter().enumerate() {
        indexed.insert(name, data);
        oracle.insert(name, data);
    }
    for request in ["op9999/x", "op0/x", "op9999", "opq/x", "op/x/y", "other"] {
        assert_eq!(indexed.search(request), oracle.search(request), "{request}");
    }
    assert_eq!(indexed.search("op9999/x"), Some(9999));
    assert_eq!(indexed.search("opq"), Some(10_000));
}
