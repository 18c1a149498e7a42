//! Cases on a run's output: completeness and order, long lines, resuming with `since`.

use anyhow::{ensure, Result};
use jobdock_backends::{LogFrom, LogLine, LogStream};

use super::{texts, Ctx};

/// How many lines the chatty case writes to each stream.
const CHATTY_LINES: usize = 5_000;

/// Every line of a chatty run comes back once, in order per stream, with its stream's tag
/// (or, where the backend merges the streams, each stream's lines in order within the one).
pub async fn logs_are_complete_and_in_order(ctx: Ctx) -> Result<()> {
    let script = format!(
        "i=1; while [ $i -le {CHATTY_LINES} ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done"
    );
    let (_, exit, lines) = ctx.run_to_end(&ctx.spec(&script)).await?;
    ensure!(exit.exit_code == Some(0), "exit {exit:?}");

    let origin = |l: &str| {
        if l.starts_with("err ") {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        }
    };
    for (stream, prefix) in [(LogStream::Stdout, "out"), (LogStream::Stderr, "err")] {
        let own = ctx.stream_lines(&lines, stream, origin)?;
        ensure!(own.len() == CHATTY_LINES, "{} {stream:?} lines", own.len());
        for (i, line) in own.iter().enumerate() {
            let want = format!("{prefix} {}", i + 1);
            ensure!(
                line.line == want,
                "{stream:?} line {i}: {:?}, want {want:?}",
                line.line
            );
        }
        ensure_times_ascend(&own, stream)?;
    }
    if ctx.merged_streams {
        ensure_times_ascend(&lines.iter().collect::<Vec<_>>(), LogStream::Stdout)?;
    }
    Ok(())
}

fn ensure_times_ascend(own: &[&LogLine], stream: LogStream) -> Result<()> {
    for pair in own.windows(2) {
        ensure!(
            pair[0].ts <= pair[1].ts,
            "{stream:?} goes back in time: {pair:?}"
        );
    }
    Ok(())
}

/// A line longer than Docker's 16 KiB chunks (and containerd's, under Kubernetes) comes back
/// whole, and a last line without a newline is not lost.
pub async fn long_line_comes_back_whole(ctx: Ctx) -> Result<()> {
    const LEN: usize = 40_000;
    let script =
        format!("head -c {LEN} /dev/zero | tr '\\000' x; echo; echo short >&2; printf last");
    let (_, _, lines) = ctx.run_to_end(&ctx.spec(&script)).await?;
    let origin = |l: &str| {
        if l == "short" {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        }
    };
    let out: Vec<_> = ctx
        .stream_lines(&lines, LogStream::Stdout, origin)?
        .into_iter()
        .map(|l| l.line.as_str())
        .collect();
    ensure!(
        out.len() == 2,
        "{} stdout lines: {:?}",
        out.len(),
        lengths(&out)
    );
    ensure!(
        out[0].len() == LEN && out[0].bytes().all(|b| b == b'x'),
        "long line mangled"
    );
    ensure!(out[1] == "last", "last line {:?}", out[1]);
    let err = ctx.stream_lines(&lines, LogStream::Stderr, origin)?;
    ensure!(err.len() == 1 && err[0].line == "short", "stderr {err:?}");
    Ok(())
}

fn lengths(lines: &[&str]) -> Vec<usize> {
    lines.iter().map(|l| l.len()).collect()
}

/// Asking again from a line's timestamp returns exactly the lines after it, across second
/// boundaries.
pub async fn logs_resume_after_since(ctx: Ctx) -> Result<()> {
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo \"line $i\"; sleep 0.3; done";
    let (handle, _, all) = ctx.run_to_end(&ctx.spec(script)).await?;
    ensure!(all.len() == 10, "{} lines", all.len());

    // A line's time may come from another clock on a second read: Docker stamps a line when
    // its attached stream delivers it, its log driver when the daemon's copier reads it,
    // and on a loaded machine either may be the later. So the reads are compared by what
    // they say, and the times asked from are those of a read by the same clock as the
    // resumed ones: a whole second read.
    let said = |lines: &[LogLine]| -> Vec<(LogStream, String)> {
        lines.iter().map(|l| (l.stream, l.line.clone())).collect()
    };
    let again = ctx.logs(&handle, None).await?;
    ensure!(said(&again) == said(&all), "read again: {again:?}");
    let since = again[4].ts;
    let resumed = ctx.logs(&handle, Some(since)).await?;
    let expected: Vec<_> = again.iter().filter(|l| l.ts > since).cloned().collect();
    ensure!(
        said(&resumed) == said(&expected),
        "resumed {resumed:?}\nexpected {expected:?}"
    );
    ensure!(
        resumed.first().map(|l| l.line.as_str()) == Some("line 6"),
        "{resumed:?}"
    );

    let after_last = ctx.logs(&handle, again.last().map(|l| l.ts)).await?;
    ensure!(after_last.is_empty(), "after the last line: {after_last:?}");
    let before_first = again[0].ts - chrono::Duration::milliseconds(100);
    ensure!(
        said(&ctx.logs(&handle, Some(before_first)).await?) == said(&all),
        "from before the first line"
    );

    // A backend that gives cursors resumes from a line's cursor with exactly the lines after
    // it, whatever `since` says; one that gives none must give none on any line.
    let cursors = all.iter().filter(|l| l.cursor.is_some()).count();
    ensure!(
        cursors == 0 || cursors == all.len(),
        "cursors on some lines only: {all:?}"
    );
    if cursors > 0 {
        let from = LogFrom {
            since: Some(all[8].ts),
            stdout: all[4].cursor.clone(),
            stderr: None,
        };
        let resumed = ctx.logs_from(&handle, &from).await?;
        ensure!(
            texts(&resumed, LogStream::Stdout) == texts(&all[5..], LogStream::Stdout),
            "resumed from the cursor of line 5: {resumed:?}"
        );
    }
    Ok(())
}
