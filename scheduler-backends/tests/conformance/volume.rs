//! Output under volume: a container writing far more than its log driver keeps.

use anyhow::{Context, Result};
use jobdock_backends::{LogDriver, LogLine, LogStream};

use super::Ctx;

/// `n` numbered lines of about 100 bytes on stdout, and every tenth number on stderr too,
/// after `pause` seconds.
pub fn chatty(n: u64, pause: f64) -> String {
    format!(
        "sleep {pause}; awk 'BEGIN {{ pad = sprintf(\"%88s\", \"\"); gsub(/ /, \"x\", pad); \
         for (i = 1; i <= {n}; i++) {{ printf \"out %07d %s\\n\", i, pad; \
         if (i % 10 == 0) printf \"err %07d\\n\", i > \"/dev/stderr\" }} }}'"
    )
}

pub fn json_file(max_size: &str, max_file: &str) -> LogDriver {
    LogDriver {
        name: "json-file".into(),
        options: [
            ("max-size".to_string(), max_size.to_string()),
            ("max-file".to_string(), max_file.to_string()),
        ]
        .into(),
    }
}

/// The number a line of [`chatty`] carries.
pub fn number(line: &LogLine) -> Option<u64> {
    line.line.get(4..11)?.parse().ok()
}

/// Each stream's numbers, in the order they arrived.
pub fn numbers(lines: &[LogLine]) -> Result<(Vec<u64>, Vec<u64>)> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for l in lines {
        let n = number(l).with_context(|| format!("not a numbered line: {:?}", l.line))?;
        match l.stream {
            LogStream::Stdout => out.push(n),
            LogStream::Stderr => err.push(n),
        }
    }
    Ok((out, err))
}

/// Whether `got` is exactly `from..=to` (step `step`).
pub fn exactly(got: &[u64], from: u64, to: u64, step: u64) -> Result<()> {
    let want: Vec<u64> = (from..=to).filter(|i| i % step == 0).collect();
    if got != want.as_slice() {
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        anyhow::bail!(
            "{} lines where {} were expected; first difference at index {first_bad:?}",
            got.len(),
            want.len()
        );
    }
    Ok(())
}

/// 600,000 lines (about 60 MB) and 60,000 on stderr, written as fast as the container can
/// once it has been up a second, through a `json-file` driver rotating every megabyte (a
/// reader of its files would lose most of it): each line arrives once, in order.
pub async fn every_line_arrives_under_rotation(ctx: Ctx) -> Result<()> {
    const N: u64 = 600_000;
    let mut spec = ctx.spec(&chatty(N, 1.0));
    spec.log_driver = Some(json_file("1m", "2"));
    // Read while it runs: a container nobody reads is held back.
    let handle = ctx.backend.launch(&spec).await?;
    let lines = ctx.logs(&handle, None).await?;
    let exit = ctx.wait(&handle).await?;
    anyhow::ensure!(exit.exit_code == Some(0), "{exit:?}");
    let (out, err) = numbers(&lines)?;
    exactly(&out, 1, N, 1).context("stdout")?;
    exactly(&err, 1, N, 10).context("stderr")?;
    Ok(())
}
