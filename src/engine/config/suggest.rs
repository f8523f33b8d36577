//! "Did you mean" suggestions: the closest known name by edit distance.

/// The Damerau (optimal string alignment) edit distance between `a` and `b`, by characters.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// The known name closest to `name`, if it is close enough to be a plausible misspelling:
/// an edit distance of at most a third of the longer name (at least 2), compared without
/// case; or one name a prefix of the other (at least 6 characters shared; such a match
/// counts as distance 2 at most, so `train_micro_batch_size` suggests
/// `train_micro_batch_size_per_gpu`); or a shared start of at least 6 characters and half the
/// longer name (`output_dir` suggests `output_path`).
pub(crate) fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for k in known {
        if k == name {
            continue;
        }
        let kl = k.to_ascii_lowercase();
        let d = distance(&lower, &kl);
        let limit = (lower.chars().count().max(kl.chars().count()) / 3).max(2);
        let prefix =
            lower.len().min(kl.len()) >= 6 && (kl.starts_with(&lower) || lower.starts_with(&kl));
        let shared = lower
            .bytes()
            .zip(kl.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let stem = shared >= 6 && 2 * shared >= lower.len().max(kl.len());
        let score = if prefix {
            d.min(2)
        } else if stem {
            d.min(limit)
        } else {
            d
        };
        if (d <= limit || prefix || stem) && best.is_none_or(|(s, _)| score < s) {
            best = Some((score, k));
        }
    }
    best.map(|(_, k)| k)
}

/// `"; did you mean X?"` for the closest known name, or "".
pub(crate) fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(name, known)
        .map(|k| format!("; did you mean {k}?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("persitence", "persistence"), 1);
        assert_eq!(distance("ab", "ba"), 1);
    }

    #[test]
    fn suggestions() {
        let known = [
            "train_micro_batch_size_per_gpu",
            "train_batch_size",
            "gradient_clipping",
        ];
        assert_eq!(
            closest("train_micro_batch_size", known),
            Some("train_micro_batch_size_per_gpu")
        );
        assert_eq!(
            closest("gradient_cliping", known),
            Some("gradient_clipping")
        );
        assert_eq!(
            closest("train_batch_sizes", known),
            Some("train_batch_size")
        );
        assert_eq!(closest("something_else", known), None);
        let fp16 = ["loss_scale", "loss_scale_window"];
        assert_eq!(closest("loss_scale_windw", fp16), Some("loss_scale_window"));
        assert_eq!(
            closest("output_dir", ["output_path", "job_name"]),
            Some("output_path")
        );
        assert_eq!(did_you_mean("xyz", known), "");
    }
}
