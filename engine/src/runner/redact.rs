//! Replaces secret values in log lines with `***` before they are stored.

use aho_corasick::{AhoCorasick, MatchKind};
use secrecy::{ExposeSecret, SecretString};

/// The mask written instead of a secret value.
pub const MASK: &str = "***";

/// A redactor for one run's secret values.
#[derive(Debug, Clone)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
}

impl Redactor {
    /// A redactor for these values. A multi-line value (a PEM key, say) is also masked line
    /// by line, because a log line never holds more than one of its lines.
    pub fn new(values: &[SecretString]) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for v in values {
            let v = v.expose_secret();
            if v.is_empty() {
                continue;
            }
            patterns.push(v.to_string());
            if v.contains('\n') {
                patterns.extend(
                    v.lines()
                        .map(str::trim)
                        .filter(|l| l.len() >= 4)
                        .map(str::to_string),
                );
            }
        }
        // Longest first, so that a secret containing another is masked whole.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patterns.dedup();
        let matcher = (!patterns.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .expect("literal patterns always build")
        });
        Self { matcher }
    }

    /// The line with every secret value masked. A line without one is handed back as it
    /// came, not copied: most lines hold no secret.
    pub fn redact(&self, line: String) -> String {
        match &self.matcher {
            Some(m) if m.is_match(&line) => {
                let masks = vec![MASK; m.patterns_len()];
                m.replace_all(&line, &masks)
            }
            _ => line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(values: &[&str]) -> Redactor {
        Redactor::new(
            &values
                .iter()
                .map(|v| SecretString::from(v.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn every_occurrence_of_every_secret_is_masked() {
        let red = r(&["hunter2", "tok-abc"]);
        assert_eq!(
            red.redact("pw=hunter2 token=tok-abc again hunter2".into()),
            "pw=*** token=*** again ***"
        );
        assert_eq!(red.redact("nothing here".into()), "nothing here");
    }

    #[test]
    fn overlapping_secrets_mask_the_longest() {
        let red = r(&["abc", "abcdef"]);
        assert_eq!(red.redact("xabcdefx abc".into()), "x***x ***");
    }

    #[test]
    fn multi_line_values_are_masked_line_by_line() {
        let red = r(&["-----BEGIN KEY-----\nMIIEvQIBADANBg\n-----END KEY-----"]);
        assert_eq!(red.redact("MIIEvQIBADANBg".into()), "***");
    }

    #[test]
    fn no_secrets_no_change() {
        assert_eq!(r(&[]).redact("a line".into()), "a line");
        assert_eq!(r(&[""]).redact("a line".into()), "a line");
    }
}
