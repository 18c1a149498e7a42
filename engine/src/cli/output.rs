//! Printing answers: a readable table by default, JSON with `--output json`.

use clap::ValueEnum;
use serde::Serialize;

/// Output format of client commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The API's JSON, for scripts.
    Json,
}

/// Prints `value` as JSON, or as a table of `headers` and `rows`.
pub fn print<T: Serialize>(format: Format, value: &T, headers: &[&str], rows: Vec<Vec<String>>) {
    match format {
        Format::Json => {
            let json = serde_json::to_string_pretty(value).expect("API values serialise");
            emit(&format!("{json}\n"));
        }
        Format::Table => emit(&table(headers, &rows)),
    }
}

/// Prints a whole list (every page read): as the API's page shape `{"items": [...],
/// "next_cursor": null}` in JSON, or as a table of `headers` and `rows`.
pub fn print_list<T: Serialize>(
    format: Format,
    items: &[T],
    headers: &[&str],
    rows: Vec<Vec<String>>,
) {
    let page = serde_json::json!({ "items": items, "next_cursor": null });
    print(format, &page, headers, rows)
}

/// Writes `text` to standard output. A reader that has gone away (`| head`) ends the command
/// quietly, as other Unix tools do, where `print!` would panic.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// How long ago `t` was, for people: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(t: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{} ago",
        span((chrono::Utc::now() - t).num_seconds().max(0))
    )
}

/// How soon `t` comes, for people: `in 40s`, `in 14h`.
pub fn until(t: chrono::DateTime<chrono::Utc>) -> String {
    format!("in {}", span((t - chrono::Utc::now()).num_seconds().max(0)))
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 90 => format!("{s}s"),
        s if s < 90 * 60 => format!("{}m", s / 60),
        s if s < 36 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// At most `max` characters of `s`, with `…` where it was cut.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// Aligns columns with spaces. A table crate would add colours and borders we do not want in
/// output that people also pipe into grep; this is the whole of what is needed.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_and_clips_read_like_people_write_them() {
        let now = chrono::Utc::now();
        assert_eq!(super::ago(now - chrono::Duration::seconds(12)), "12s ago");
        assert_eq!(super::ago(now - chrono::Duration::minutes(5)), "5m ago");
        assert_eq!(super::ago(now - chrono::Duration::hours(3)), "3h ago");
        assert_eq!(super::ago(now - chrono::Duration::days(2)), "2d ago");
        assert!(
            super::until(now + chrono::Duration::hours(14) + chrono::Duration::seconds(5))
                .starts_with("in 14h")
        );
        assert_eq!(super::clip("abcdef", 3), "abc…");
        assert_eq!(super::clip("abc", 3), "abc");
    }

    #[test]
    fn columns_line_up() {
        let t = super::table(
            &["NAME", "IMAGE"],
            &[
                vec!["a".into(), "x:1".into()],
                vec!["long-name".into(), "y".into()],
            ],
        );
        assert_eq!(t, "NAME       IMAGE\na          x:1\nlong-name  y\n");
    }
}
