//! How well scores rank labelled rows: ROC-AUC, PR-AUC (average precision), and the recall at a
//! given false-positive rate, the figure a fraud team sets its alert threshold by.

/// Quality figures of a set of scores against 0/1 labels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Quality {
    /// Area under the ROC curve: the chance a random positive outscores a random negative.
    pub roc_auc: f64,
    /// Average precision: the area under the precision-recall curve.
    pub pr_auc: f64,
    /// Share of positives caught at the highest threshold whose false-positive rate is at most
    /// `fpr`.
    pub recall_at_fpr: f64,
    /// The false-positive rate `recall_at_fpr` is measured at.
    pub fpr: f64,
    /// Rows scored.
    pub rows: usize,
    /// Positive rows among them.
    pub positives: usize,
}

/// Scores `scores` against `labels` (true for positive); `None` without both classes.
pub fn quality(scores: &[f64], labels: &[bool], fpr: f64) -> Option<Quality> {
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 || scores.len() != labels.len() {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Highest score first; NaN scores rank last.
    order.sort_by(|&a, &b| {
        let (a, b) = (scores[a], scores[b]);
        b.partial_cmp(&a)
            .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
    });
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut auc, mut ap) = (0.0, 0.0);
    let mut recall_at = 0.0;
    let mut i = 0;
    while i < order.len() {
        // Rows with equal scores move the curve together (a diagonal step in ROC space).
        let score = scores[order[i]];
        let (tp0, fp0) = (tp, fp);
        while i < order.len()
            && (scores[order[i]] == score || (score.is_nan() && scores[order[i]].is_nan()))
        {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        auc += (fp - fp0) as f64 * (tp + tp0) as f64 / 2.0;
        if tp > tp0 {
            ap += (tp - tp0) as f64 / positives as f64 * (tp as f64 / (tp + fp) as f64);
        }
        if fp as f64 / negatives as f64 <= fpr {
            recall_at = tp as f64 / positives as f64;
        }
    }
    Some(Quality {
        roc_auc: auc / (positives as f64 * negatives as f64),
        pr_auc: ap,
        recall_at_fpr: recall_at,
        fpr,
        rows: labels.len(),
        positives,
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn perfect_random_and_tied_rankings() {
        let labels = [true, true, false, false, false];
        let perfect = quality(&[0.9, 0.8, 0.3, 0.2, 0.1], &labels, 0.0).unwrap();
        assert_eq!(
            (perfect.roc_auc, perfect.pr_auc, perfect.recall_at_fpr),
            (1.0, 1.0, 1.0)
        );
        let inverted = quality(&[0.1, 0.2, 0.3, 0.8, 0.9], &labels, 0.0).unwrap();
        assert_eq!(inverted.roc_auc, 0.0);
        assert_eq!(inverted.recall_at_fpr, 0.0);
        // All tied: the ROC curve is the diagonal.
        let tied = quality(&[0.5; 5], &labels, 0.5).unwrap();
        assert!((tied.roc_auc - 0.5).abs() < 1e-12);
        assert!(
            (tied.pr_auc - 0.4).abs() < 1e-12,
            "precision is the base rate"
        );
        // One negative above the second positive: AUC 5/6, recall 0.5 at FPR 0, 1 at 1/3.
        let mixed = [0.9, 0.5, 0.7, 0.2, 0.1];
        let q = quality(&mixed, &labels, 0.0).unwrap();
        assert!((q.roc_auc - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(q.recall_at_fpr, 0.5);
        assert_eq!(quality(&mixed, &labels, 0.34).unwrap().recall_at_fpr, 1.0);
        assert!((q.pr_auc - (0.5 * 1.0 + 0.5 * 2.0 / 3.0)).abs() < 1e-12);
        assert!(quality(&[0.1], &[true], 0.01).is_none());
    }
}
