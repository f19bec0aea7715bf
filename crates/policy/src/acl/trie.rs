//! The operation-name trie of one policy (Dapr's `pkg/config/acl_trie.go`), indexed so that a lookup costs the same
//! with 1 or 10,000 operations and building it is linear in their number.
//!
//! Owns: inserting names (segments split on `/`, no leading `/`) and finding the operation that applies to a
//! normalised method. Dapr's answer is kept exactly: at each level the first child *in declaration order* that
//! matches the segment wins (a literal, `*` at the end, `**`, or a glob such as `op*`), a node with an operation
//! decides even with segments left (names match as prefixes), and `*` in the middle keeps walking. Only *how* the
//! first matching child is found changed: literal children are looked up in a hash index (once a node has more
//! than [`INDEX_AT`] children), and only wildcard children are scanned. The simple scan this replaced is kept as
//! the test oracle (`acl/scan.rs`) and a property test holds the two to the same answer.
//!
//! Does not own: case folding (the caller lower-cases HTTP names), validation of names, or what an operation says.

use std::collections::HashMap;

/// From this many children on, a node indexes its literal children by segment; below, a scan of a few short
/// strings is as fast and costs no memory.
const INDEX_AT: usize = 8;

/// One segment of an operation-name trie (Dapr's `trieNode`, with the leading `/` left off `seg`).
#[derive(Debug, Clone, Default)]
pub(super) struct Node {
    seg: Box<str>,
    /// Index into the policy's operations.
    data: Option<usize>,
    children: Vec<Node>,
    /// Literal children (no `*`): segment → position in `children`; built once there are [`INDEX_AT`] children.
    #[expect(clippy::box_collection, reason = "most nodes have no index: 8 bytes instead of an empty map's 48")]
    literal: Option<Box<HashMap<Box<str>, usize>>>,
    /// Positions in `children` of the children whose segment has a `*`, in declaration order.
    wildcards: Vec<usize>,
}

impl Node {
    /// Port of Dapr's `PutOperationAction`: segments are matched exactly while inserting, and the first operation
    /// stored at a node keeps it. `name` has no leading `/`.
    pub(super) fn insert(&mut self, name: &str, data: usize) {
        let mut node = self;
        let mut segments = name.split('/').peekable();
        while let Some(seg) = segments.next() {
            let is_last = segments.peek().is_none();
            let pos = match node.position_of(seg) {
                Some(pos) => pos,
                None => node.push_child(seg),
            };
            let Some(child) = node.children.get_mut(pos) else { return };
            if is_last && child.data.is_none() {
                child.data = Some(data);
            }
            node = child;
        }
    }

    /// Drops the spare capacity of every list once the trie is built (it is never changed afterwards).
    /// Iterative: a name may have very many segments, and the trie is as deep as that.
    pub(super) fn shrink(&mut self) {
        let mut stack = vec![self];
        while let Some(node) = stack.pop() {
            node.children.shrink_to_fit();
            node.wildcards.shrink_to_fit();
            stack.extend(node.children.iter_mut());
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

    /// The child whose segment is exactly `seg` (there is at most one: inserting reuses it).
    fn position_of(&self, seg: &str) -> Option<usize> {
        if seg.contains('*') {
            return self.wildcards.iter().copied().find(|&pos| self.children.get(pos).is_some_and(|c| &*c.seg == seg));
        }
        match &self.literal {
            Some(index) => index.get(seg).copied(),
            None => self.children.iter().position(|c| &*c.seg == seg),
        }
    }

    fn push_child(&mut self, seg: &str) -> usize {
        let pos = self.children.len();
        self.children.push(Node { seg: seg.into(), ..Node::default() });
        if seg.contains('*') {
            self.wildcards.push(pos);
        } else if let Some(index) = &mut self.literal {
            index.insert(seg.into(), pos);
        } else if self.children.len() >= INDEX_AT {
            let index = self
                .children
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.seg.contains('*'))
                .map(|(pos, c)| (c.seg.clone(), pos))
                .collect();
            self.literal = Some(Box::new(index));
        }
        pos
    }

    /// Port of Dapr's `findNodeWithWildcard`: the first child (in declaration order) that matches wins. The first
    /// literal match comes from the index; only wildcard children declared before it can beat it.
    fn find_child(&self, seg: &str, is_end: bool) -> Option<&Node> {
        let literal = match &self.literal {
            Some(index) => index.get(seg).copied(),
            None => self.children.iter().position(|c| &*c.seg == seg),
        };
        let before = literal.unwrap_or(usize::MAX);
        let wildcard = self.wildcards.iter().copied().take_while(|&pos| pos < before).find(|&pos| {
            self.children.get(pos).is_some_and(|child| match &*child.seg {
                s if s == seg => true,
                "*" => is_end,
                "**" => true,
                pattern => glob_match(pattern.as_bytes(), seg.as_bytes()),
            })
        });
        wildcard.or(literal).and_then(|pos| self.children.get(pos))
    }
}

/// `*` matches any run of bytes (including none); everything else matches itself. The path-pattern matcher of
/// operation names, shared with other modules that match Dapr operation patterns.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some(b'*'), _) => {
                backtrack = Some((p, t));
                p += 1;
            }
            (Some(a), Some(b)) if a == b => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    p = bp + 1;
                    t = bt + 1;
                    backtrack = Some((bp, bt + 1));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}
