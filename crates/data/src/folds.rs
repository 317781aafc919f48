//! Folds for k-fold cross-validation, stratified by class and never splitting
//! a group (a patient, a study): every image of a group lands in one fold.
//!
//! ```text
//! groups   each file's group (each file its own group when none are given)
//! target   ideal[c] = images of class c / k, for every fold
//! order    the groups shuffled with the seed, then sorted by size, largest first (stable)
//! place    each group in turn goes to the fold where it adds the least to
//!          sum over classes of (count[fold][c] - ideal[c])^2,
//!          ties to the fold with the fewest images, then the lowest number
//! ```
//!
//! Large groups go first while the folds are empty; the many small ones fill
//! the gaps last, which brings each fold's class counts close to the ideal.
//! The same files, groups, k and seed give the same folds.
//!
//! ```
//! use convnet_data::folds::assign_folds;
//! // six images of two classes, three patients of two images each: no patient split
//! let labels = [0, 0, 1, 1, 0, 1];
//! let groups = [0, 0, 1, 1, 2, 2];
//! let folds = assign_folds(&labels, &groups, 2, 3, 7);
//! assert!(folds[0] == folds[1] && folds[2] == folds[3] && folds[4] == folds[5]);
//! let mut used = folds.clone();
//! used.sort();
//! assert_eq!(used, [0, 0, 1, 1, 2, 2]);
//! ```

use convnet_tensor::rng::rng_at;
use rand::seq::SliceRandom;

/// The fold (`0..k`) of each file, from its class `labels[i]` (`< classes`)
/// and its group `groups[i]` (any numbering); see the module docs.
pub fn assign_folds(labels: &[usize], groups: &[usize], classes: usize, k: usize, seed: u64) -> Vec<usize> {
    assert_eq!(labels.len(), groups.len(), "one group per file");
    assert!(k > 0, "at least one fold");
    // each group's class counts and files
    let mut index: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
    let mut members: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
    for (file, (&label, &group)) in labels.iter().zip(groups).enumerate() {
        let slot = *index.entry(group).or_insert_with(|| {
            members.push((vec![0; classes], Vec::new()));
            members.len() - 1
        });
        members[slot].0[label] += 1;
        members[slot].1.push(file);
    }
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.shuffle(&mut rng_at(seed, 0xF01D));
    order.sort_by_key(|&g| std::cmp::Reverse(members[g].1.len()));
    let mut ideal = vec![0.0; classes];
    for &label in labels {
        ideal[label] += 1.0 / k as f64;
    }
    let mut counts = vec![vec![0usize; classes]; k];
    let mut sizes = vec![0usize; k];
    let mut fold_of = vec![0; labels.len()];
    for g in order {
        let (class_counts, files) = &members[g];
        let cost = |fold: usize| -> f64 {
            (0..classes)
                .map(|c| {
                    let before = counts[fold][c] as f64 - ideal[c];
                    let after = before + class_counts[c] as f64;
                    after * after - before * before
                })
                .sum()
        };
        let best = (0..k)
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(sizes[a].cmp(&sizes[b])).then(a.cmp(&b)))
            .expect("k > 0");
        for c in 0..classes {
            counts[best][c] += class_counts[c];
        }
        sizes[best] += files.len();
        for &file in files {
            fold_of[file] = best;
        }
    }
    fold_of
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patients of 1-5 images, each patient's images of one class.
    fn patients(count: usize, classes: usize) -> (Vec<usize>, Vec<usize>) {
        let (mut labels, mut groups) = (Vec::new(), Vec::new());
        for patient in 0..count {
            let images = 1 + (patient * 7 + patient / 3) % 5;
            for _ in 0..images {
                labels.push((patient * 5 + patient / 7) % classes);
                groups.push(patient * 13 + 1000);
            }
        }
        (labels, groups)
    }

    #[test]
    fn no_group_is_split_classes_are_stratified_and_the_seed_fixes_the_folds() {
        let (labels, groups) = patients(400, 3);
        let folds = assign_folds(&labels, &groups, 3, 5, 42);
        // no group in two folds
        let mut fold_of_group = std::collections::HashMap::new();
        for (&group, &fold) in groups.iter().zip(&folds) {
            assert_eq!(*fold_of_group.entry(group).or_insert(fold), fold, "group {group} split");
        }
        // each fold's class counts within one image of the ideal
        for fold in 0..5 {
            for class in 0..3 {
                let total = labels.iter().filter(|&&l| l == class).count() as f64;
                let count = labels.iter().zip(&folds).filter(|(&l, &f)| l == class && f == fold).count() as f64;
                assert!((count - total / 5.0).abs() <= 1.0, "fold {fold} class {class}: {count} vs {}", total / 5.0);
            }
        }
        assert_eq!(assign_folds(&labels, &groups, 3, 5, 42), folds, "the same seed, the same folds");
        assert_ne!(assign_folds(&labels, &groups, 3, 5, 43), folds, "another seed, other folds");
    }
}
