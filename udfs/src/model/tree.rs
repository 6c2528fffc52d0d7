//! Binary decision trees, shared by the GBDT and the isolation forest: a node list as the model
//! files give it, and forests of them, which walk the flat copy of a tree
//! ([`super::flat`]) where it has one.
//!
//! Conventions are XGBoost's: a row goes left when `value < threshold`, a missing value (NaN)
//! follows the node's default direction, and a categorical split sends the listed categories
//! right and everything else (negative or unknown codes too) left.

/// How an internal node splits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    /// Left when the value is below the threshold.
    Below(f32),
    /// Right when the value's category code is in the bit set.
    InCategories(Vec<u64>),
}

impl Condition {
    /// The numeric threshold, NaN for a categorical split (where model files store none).
    pub(crate) fn threshold(&self) -> f32 {
        match self {
            Condition::Below(threshold) => *threshold,
            Condition::InCategories(_) => f32::NAN,
        }
    }
}

/// One node of a tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// A leaf and its value (a margin for the GBDT, a path length for the isolation forest).
    Leaf(f32),
    /// An internal node.
    Split {
        /// Index of the feature the node reads.
        feature: u32,
        /// The test.
        condition: Condition,
        /// Where a missing value goes.
        default_left: bool,
        /// Child indices.
        left: u32,
        /// Child indices.
        right: u32,
    },
}

/// Does `category` (a feature value read as a category code) fall in `set`?
fn in_categories(set: &[u64], category: f32) -> bool {
    // Codes are whole numbers below 2^24 (exact in f32); anything else is no known category.
    if !(0.0..16_777_216.0).contains(&category) {
        return false;
    }
    let code = category as usize;
    set.get(code / 64)
        .is_some_and(|word| word & (1u64 << (code % 64)) != 0)
}

/// A bit set holding `codes`.
pub(crate) fn category_set(codes: impl IntoIterator<Item = u32>) -> Vec<u64> {
    let mut set = Vec::new();
    for code in codes {
        let word = code as usize / 64;
        if set.len() <= word {
            set.resize(word + 1, 0);
        }
        set[word] |= 1u64 << (code % 64);
    }
    set
}

/// A tree as a node list; node 0 is the root.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
}

impl Tree {
    /// Checks that every child is inside the list and has one parent, so every walk ends.
    /// (Children usually follow their parent, but a pruned tree may reuse freed slots.)
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("a tree has no nodes".into());
        }
        let mut reached = vec![false; self.nodes.len()];
        reached[0] = true;
        let mut pending = vec![0usize];
        while let Some(node) = pending.pop() {
            if let Node::Split { left, right, .. } = &self.nodes[node] {
                for child in [*left as usize, *right as usize] {
                    match reached.get_mut(child) {
                        None => {
                            return Err(format!(
                                "node {node} has child {child}, outside the tree of {} nodes",
                                self.nodes.len()
                            ));
                        }
                        Some(true) => {
                            return Err(format!("node {child} is reached twice"));
                        }
                        Some(seen) => *seen = true,
                    }
                    pending.push(child);
                }
            }
        }
        Ok(())
    }

    /// The child of internal node `node` that `row` goes to.
    pub(crate) fn next(&self, node: usize, row: &[f32]) -> usize {
        match &self.nodes[node] {
            Node::Leaf(_) => node,
            Node::Split {
                feature,
                condition,
                default_left,
                left,
                right,
            } => {
                let value = row[*feature as usize];
                let go_left = if value.is_nan() {
                    *default_left
                } else {
                    match condition {
                        Condition::Below(threshold) => value < *threshold,
                        Condition::InCategories(set) => !in_categories(set, value),
                    }
                };
                (if go_left { *left } else { *right }) as usize
            }
        }
    }

    /// The leaf `row` ends in, and its value.
    pub(crate) fn leaf(&self, row: &[f32]) -> (usize, f32) {
        let mut node = 0;
        loop {
            match self.nodes[node] {
                Node::Leaf(value) => return (node, value),
                Node::Split { .. } => node = self.next(node, row),
            }
        }
    }

    /// The length of the longest root-to-leaf path.
    pub(crate) fn depth(&self) -> usize {
        fn below(tree: &Tree, node: usize) -> usize {
            match &tree.nodes[node] {
                Node::Leaf(_) => 0,
                Node::Split { left, right, .. } => {
                    1 + below(tree, *left as usize).max(below(tree, *right as usize))
                }
            }
        }
        below(self, 0)
    }

    /// The largest feature index a node reads, if any node reads one.
    pub(crate) fn max_feature(&self) -> Option<u32> {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Split { feature, .. } => Some(*feature),
                Node::Leaf(_) => None,
            })
            .max()
    }
}

use super::flat::{FlatTree, LANES, LaneGroup, contribute, widen_into_lane, widen_row};

/// An ordered list of trees whose leaf values are summed.
#[derive(Debug, Clone)]
pub(crate) struct Forest {
    trees: Vec<Tree>,
    /// The flat copy of each tree that has one.
    flat: Vec<Option<FlatTree>>,
    /// Each tree's node means, for path contributions (empty when the model has none).
    means: Vec<Vec<f32>>,
}

/// Rows scored together: few enough that their widened values stay in cache while every tree
/// walks them (64 was the fastest of 32 to 1024 here).
const BLOCK_ROWS: usize = 64;

impl Forest {
    /// A forest of `trees`, each checked.
    pub(crate) fn new(trees: Vec<Tree>) -> Result<Self, String> {
        Self::with_means(trees, Vec::new())
    }

    /// A forest whose trees come with each node's mean value (one list per tree, one mean per
    /// node), so that it can report path contributions.
    pub(crate) fn with_means(trees: Vec<Tree>, means: Vec<Vec<f32>>) -> Result<Self, String> {
        for (i, tree) in trees.iter().enumerate() {
            tree.validate().map_err(|e| format!("tree {i}: {e}"))?;
            if let Some(m) = means.get(i)
                && m.len() != tree.nodes.len()
            {
                return Err(format!(
                    "tree {i}: {} node means for {} nodes",
                    m.len(),
                    tree.nodes.len()
                ));
            }
        }
        if !means.is_empty() && means.len() != trees.len() {
            return Err(format!(
                "node means for {} of {} trees",
                means.len(),
                trees.len()
            ));
        }
        let flat = trees
            .iter()
            .enumerate()
            .map(|(i, t)| FlatTree::from_tree(t, means.get(i).map(Vec::as_slice)))
            .collect();
        Ok(Self { trees, flat, means })
    }

    /// The trees.
    pub(crate) fn trees(&self) -> &[Tree] {
        &self.trees
    }

    /// The largest feature index any tree reads.
    pub(crate) fn max_feature(&self) -> Option<u32> {
        self.trees.iter().filter_map(Tree::max_feature).max()
    }

    /// Adds the sum of every tree's leaf value, in tree order, to each row's entry of `out`;
    /// `rows` is row-major with `width` (at least 1) values a row.
    pub(crate) fn add_sums(&self, rows: &[f32], width: usize, out: &mut [f32]) {
        let mut groups: Vec<LaneGroup> = vec![[0.0; _]; BLOCK_ROWS / LANES];
        for (block, out) in rows
            .chunks(BLOCK_ROWS * width)
            .zip(out.chunks_mut(BLOCK_ROWS))
        {
            for (r, row) in block.chunks_exact(width).enumerate() {
                widen_into_lane(row, &mut groups[r / LANES], r % LANES);
            }
            let used = &groups[..out.len().div_ceil(LANES)];
            for (tree, flat) in self.trees.iter().zip(&self.flat) {
                match flat {
                    Some(flat) => flat.add_to(used, out),
                    None => {
                        for (row, out) in block.chunks_exact(width).zip(out.iter_mut()) {
                            *out += tree.leaf(row).1;
                        }
                    }
                }
            }
        }
    }

    /// Adds one row's path contributions to `out` (one entry per feature, then the bias): for
    /// each split on the row's path, the change in node mean is credited to the split's feature.
    /// Needs the node means ([`Forest::with_means`]); adds nothing without them.
    pub(crate) fn add_contributions(&self, row: &[f32], out: &mut [f32]) {
        let bias = out.len() - 1;
        if self.means.is_empty() {
            return;
        }
        contribute(&self.flat, &widen_row(row), out);
        for ((tree, flat), means) in self.trees.iter().zip(&self.flat).zip(&self.means) {
            if flat.is_some() {
                continue;
            }
            let mut node = 0;
            out[bias] += means[0];
            while let Node::Split { feature, .. } = tree.nodes[node] {
                let next = tree.next(node, row);
                out[feature as usize] += means[next] - means[node];
                node = next;
            }
        }
    }
}
