//! The model's input: hashed words and word pairs. model/train.py computes
//! the same features to train the model; keep the two in step.

/// Length of the feature vector (the model's `features` input width).
pub const DIMENSIONS: usize = 1024;

/// `log(1 + count)` of each hashed word and word pair of `text`, scaled to
/// length 1. Words are maximal runs of ASCII letters and digits, lowercased.
pub fn features(text: &str) -> Vec<f32> {
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut counts = vec![0f64; DIMENSIONS];
    for word in &words {
        counts[bucket(word.as_bytes())] += 1.0;
    }
    for pair in words.windows(2) {
        let gram = format!("{} {}", pair[0], pair[1]);
        counts[bucket(gram.as_bytes())] += 1.0;
    }
    let logs: Vec<f64> = counts.iter().map(|c| c.ln_1p()).collect();
    let norm = logs.iter().map(|v| v * v).sum::<f64>().sqrt();
    logs.iter()
        .map(|v| if norm > 0.0 { (v / norm) as f32 } else { 0.0 })
        .collect()
}

fn bucket(gram: &[u8]) -> usize {
    let hash = gram.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    hash as usize % DIMENSIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_pairs_are_counted_and_scaled() {
        let v = features("Refund, refund NOW");
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "{norm}");
        // "refund" twice, "now", "refund refund", "refund now": four buckets.
        assert_eq!(v.iter().filter(|x| **x > 0.0).count(), 4);
        assert_eq!(
            features("Refund, refund NOW"),
            features("refund refund now")
        );
        assert!(features("").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn the_hash_is_fnv1a() {
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(bucket(b"a"), 0xe40c_292c_usize % DIMENSIONS);
    }
}
