//! Reading the engine's `/metrics` exposition in tests.
//!
//! Hand-written rather than the `prometheus-parse` crate: that crate reads the classic text
//! format (not OpenMetrics, which the engine serves), brings regex, chrono and itertools
//! along and sees few releases, while the tests only need the sample lines — a name, its
//! labels and a value — which take a few lines to read.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, e.g. `jobdock_runs_finished_total`.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses an OpenMetrics (or classic Prometheus) text exposition; comment lines and
    /// `# EOF` are skipped. Panics on a line it cannot read: the engine wrote it wrong.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| sample(l).unwrap_or_else(|| panic!("unreadable sample line: {l}")))
            .collect();
        Self { samples }
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the matching samples' values (0 when none match).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The value of the one sample with exactly these labels, if there is one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels)
            .find(|s| s.labels.len() == labels.len())
            .map(|s| s.value)
    }
}

fn sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            // A label name up to `="`, then a quoted value with `\\`, `\"`, `\n` escapes.
            let (start, c) = chars.next()?;
            if c == '}' {
                break start;
            }
            if c == ',' {
                continue;
            }
            let eq = after[start..].find("=\"")? + start;
            let key = after[start..eq].to_string();
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.insert(key, value);
        };
        rest = &after[end + 1..];
    }
    // A value may be followed by a timestamp or an exemplar; the value comes first.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_with_escapes_and_values() {
        let text = "# HELP jobdock_x Things.\n# TYPE jobdock_x counter\n\
            jobdock_x_total{job=\"a\",status=\"succeeded\"} 2\n\
            jobdock_y{kind=\"q\\\"u,o}te\\\\d\\n\"} 1.5\n\
            jobdock_h_bucket{le=\"+Inf\",job=\"a\"} 3\n\
            jobdock_up 1\n# EOF\n";
        let e = Exposition::parse(text);
        assert_eq!(e.samples.len(), 4);
        assert_eq!(
            e.value("jobdock_x_total", &[("job", "a"), ("status", "succeeded")]),
            Some(2.0)
        );
        assert_eq!(
            e.value("jobdock_x_total", &[("job", "a")]),
            None,
            "not exact"
        );
        assert_eq!(e.sum("jobdock_x_total", &[("job", "a")]), 2.0);
        assert_eq!(
            e.value("jobdock_y", &[("kind", "q\"u,o}te\\d\n")]),
            Some(1.5)
        );
        assert_eq!(e.sum("jobdock_h_bucket", &[("le", "+Inf")]), 3.0);
        assert_eq!(e.value("jobdock_up", &[]), Some(1.0));
        assert_eq!(e.sum("jobdock_missing", &[]), 0.0);
    }
}
