//! The simple scan Dapr's trie was first ported as (children tried one by one in declaration order, linear
//! insertion): kept only as the oracle the indexed trie ([`super::trie`]) is tested against.

use super::glob_match;

/// One segment of an operation-name trie (Dapr's `trieNode`, with the leading `/` left off `seg`).
#[derive(Debug, Default)]
pub(super) struct Node {
    seg: Box<str>,
    /// Index into `Policy::operations`.
    data: Option<usize>,
    children: Vec<Node>,
}

impl Node {
    /// Port of Dapr's `PutOperationAction`: segments are matched exactly while inserting, and the first operation
    /// stored at a node keeps it. `name` has no leading `/`.
    pub(super) fn insert(&mut self, name: &str, data: usize) {
        let mut node = self;
        let mut segments = name.split('/').peekable();
        while let Some(seg) = segments.next() {
            let is_last = segments.peek().is_none();
            let pos = match node.children.iter().position(|c| &*c.seg == seg) {
                Some(pos) => pos,
                None => {
                    node.children.push(Node { seg: seg.into(), data: None, children: Vec::new() });
                    node.children.len() - 1
                }
            };
            let Some(child) = node.children.get_mut(pos) else { return };
            if is_last && child.data.is_none() {
                child.data = Some(data);
            }
            node = child;
        }
    }

    /// Port of Dapr's `Trie.Search` (DAPR-FACTS §3.3): returns the operation index that applies, if any.
    pub(super) fn search(&self, operation: &str) -> Option<usize> {
        let operation = operation.strip_prefix('/').unwrap_or(operation);
        let mut node = self;
        let mut segments = operation.split('/').peekable();
        while let Some(seg) = segments.next() {
            let is_end = segments.peek().is_none();
            node = node.find_child(seg, is_end)?;
            match node.data {
                // A single-stage `*` in the middle of a path: keep walking below it.
                Some(_) if !is_end && &*node.seg == "*" => continue,
                // Any other node with data decides, even with segments left: non-wildcard names match as prefixes.
                Some(data) => return Some(data),
                // At the end without data: a `/*` or `/**` child also matches its parent.
                None if is_end => return node.find_child("*", true).and_then(|n| n.data),
                None => {}
            }
        }
        None
    }

    /// Port of Dapr's `findNodeWithWildcard`: the first child (in declaration order) that matches wins.
    fn find_child(&self, seg: &str, is_end: bool) -> Option<&Node> {
        self.children.iter().find(|child| match &*child.seg {
            s if s == seg => true,
            "*" => is_end,
            "**" => true,
            pattern => glob_match(pattern.as_bytes(), seg.as_bytes()),
        })
    }
}
