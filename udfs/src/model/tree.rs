//! Binary decision trees, shared by the GBDT and the isolation forest: a node list as the model
//! files give it, and a flat, breadth-first copy of each shallow numeric tree that is walked
//! without branches, which is where scoring speed comes from.
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

/// Trees no deeper than this are copied into the flat layout (2^10 leaves at most).
const FLAT_MAX_DEPTH: usize = 10;

/// A numeric tree padded to a complete binary tree of its depth, stored breadth first: node `i`
/// has children `2i + 1` and `2i + 2`, so a walk is `depth` compare-and-shift steps with no
/// branch to mispredict. A leaf above the bottom is copied into every bottom slot below it.
#[derive(Debug, Clone)]
struct FlatTree {
    depth: usize,
    feature: Vec<u32>,
    threshold: Vec<f32>,
    /// 1 where a missing value goes left.
    default_left: Vec<u8>,
    leaves: Vec<f32>,
}

impl FlatTree {
    fn from_tree(tree: &Tree) -> Option<Self> {
        let depth = tree.depth();
        let numeric = tree.nodes.iter().all(|n| {
            !matches!(
                n,
                Node::Split {
                    condition: Condition::InCategories(_),
                    ..
                }
            )
        });
        if !numeric || depth > FLAT_MAX_DEPTH {
            return None;
        }
        let internal = (1usize << depth) - 1;
        let mut flat = FlatTree {
            depth,
            feature: vec![0; internal],
            threshold: vec![0.0; internal],
            default_left: vec![1; internal],
            leaves: vec![0.0; 1 << depth],
        };
        flat.fill(tree, 0, 0, 0);
        Some(flat)
    }

    /// Copies the subtree at `node` into flat slot `slot` at `level`.
    fn fill(&mut self, tree: &Tree, node: usize, slot: usize, level: usize) {
        match &tree.nodes[node] {
            Node::Leaf(value) => {
                // Every bottom slot under this one holds the leaf, whatever the padding nodes
                // above them decide.
                let span = 1usize << (self.depth - level);
                let first = (slot + 1) * span - 1 - ((1usize << self.depth) - 1);
                self.leaves[first..first + span].fill(*value);
            }
            Node::Split {
                feature,
                condition,
                default_left,
                left,
                right,
            } => {
                self.feature[slot] = *feature;
                if let Condition::Below(threshold) = condition {
                    self.threshold[slot] = *threshold;
                }
                self.default_left[slot] = u8::from(*default_left);
                self.fill(tree, *left as usize, 2 * slot + 1, level + 1);
                self.fill(tree, *right as usize, 2 * slot + 2, level + 1);
            }
        }
    }

    /// Adds this tree's leaf value for each row of `rows` (row-major, `width` values a row) to
    /// `out`. Four rows walk together so that their loads overlap.
    fn add_to(&self, rows: &[f32], width: usize, out: &mut [f32]) {
        let internal = self.feature.len();
        let mut groups = rows.chunks_exact(4 * width);
        let mut outs = out.chunks_exact_mut(4);
        for (group, out) in (&mut groups).zip(&mut outs) {
            let mut slot = [0usize; 4];
            for _ in 0..self.depth {
                for (lane, slot) in slot.iter_mut().enumerate() {
                    *slot = self.step(*slot, &group[lane * width..(lane + 1) * width]);
                }
            }
            for (lane, out) in out.iter_mut().enumerate() {
                *out += self.leaves[slot[lane] - internal];
            }
        }
        for (row, out) in groups
            .remainder()
            .chunks_exact(width)
            .zip(outs.into_remainder())
        {
            let mut slot = 0;
            for _ in 0..self.depth {
                slot = self.step(slot, row);
            }
            *out += self.leaves[slot - internal];
        }
    }

    #[inline(always)]
    fn step(&self, slot: usize, row: &[f32]) -> usize {
        let value = row[self.feature[slot] as usize];
        let threshold = self.threshold[slot];
        // `value >= threshold` is false for NaN, which then goes right unless it defaults left.
        let right = (value >= threshold) | (value.is_nan() & (self.default_left[slot] == 0));
        2 * slot + 1 + usize::from(right)
    }
}

/// An ordered list of trees whose leaf values are summed.
#[derive(Debug, Clone)]
pub(crate) struct Forest {
    trees: Vec<Tree>,
    /// The flat copy of each tree that has one.
    flat: Vec<Option<FlatTree>>,
}

/// Rows scored together: small enough that the block stays in cache while every tree walks it.
const BLOCK_ROWS: usize = 256;

impl Forest {
    /// A forest of `trees`, each checked.
    pub(crate) fn new(trees: Vec<Tree>) -> Result<Self, String> {
        for (i, tree) in trees.iter().enumerate() {
            tree.validate().map_err(|e| format!("tree {i}: {e}"))?;
        }
        let flat = trees.iter().map(FlatTree::from_tree).collect();
        Ok(Self { trees, flat })
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
        for (block, out) in rows
            .chunks(BLOCK_ROWS * width)
            .zip(out.chunks_mut(BLOCK_ROWS))
        {
            for (tree, flat) in self.trees.iter().zip(&self.flat) {
                match flat {
                    Some(flat) => flat.add_to(block, width, out),
                    None => {
                        for (row, out) in block.chunks_exact(width).zip(out.iter_mut()) {
                            *out += tree.leaf(row).1;
                        }
                    }
                }
            }
        }
    }
}
