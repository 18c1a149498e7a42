//! The Nomad backend against a fake agent whose logmon rotates the task's output into
//! numbered files and removes the oldest, as Nomad does: a reader within the kept files gets
//! everything; one that falls behind, or comes back after its file was removed, is told
//! where output is missing and then gets every byte still kept, never one twice.

#[allow(unused_imports)]
mod conformance;
mod nomad_fake;

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use conformance::{chatty, exactly, Ctx, Target};
use futures::StreamExt;
use jobdock_backends::nomad::{NomadBackend, NomadConfig};
use jobdock_backends::{Backend, LogFrom, LogGap, LogItem, LogLine, LogStream, RunHandle};
use nomad_fake::{FakeNomad, Options};

/// A fake rotating every `file_bytes` and keeping `files`, and a target pointed at it.
async fn rotating(file_bytes: u64, files: u64) -> Result<(FakeNomad, Target)> {
    let fake = FakeNomad::start(Options {
        frame_bytes: 64 * 1024,
        log_file_bytes: file_bytes,
        log_max_files: files,
        ..Options::default()
    })
    .await?;
    let backend = NomadBackend::new(NomadConfig::new(fake.address.clone()))?;
    let target = Target {
        backend: Arc::new(backend),
        image: "busybox:1.36".into(),
        inspector: Arc::new(conformance::Unseen),
        merged_streams: false,
    };
    Ok((fake, target))
}

/// Reads the rest of a stream, noting where gaps came.
async fn collect(
    backend: &dyn Backend,
    handle: &RunHandle,
    from: &LogFrom,
) -> Result<(Vec<LogLine>, Vec<(usize, LogGap)>)> {
    let read = async {
        let mut stream = backend.logs(handle, from);
        let (mut lines, mut gaps) = (Vec::new(), Vec::new());
        while let Some(item) = stream.next().await {
            match item? {
                LogItem::Line(l) => lines.push(l),
                LogItem::Gap(g) => gaps.push((lines.len(), g)),
            }
        }
        Ok::<_, anyhow::Error>((lines, gaps))
    };
    tokio::time::timeout(conformance::PATIENCE, read)
        .await
        .context("the read did not end")?
}

/// One stream's numbers, in order. A gap cuts a line in two, and its pieces carry no whole
/// number: at most two such pieces per gap are passed over.
fn numbered(lines: &[LogLine], stream: LogStream, gaps: usize) -> Result<Vec<u64>> {
    let of_stream: Vec<&LogLine> = lines.iter().filter(|l| l.stream == stream).collect();
    let got: Vec<u64> = of_stream
        .iter()
        .filter_map(|l| conformance::number(l))
        .collect();
    let pieces = of_stream.len() - got.len();
    ensure!(
        pieces <= 2 * gaps,
        "{pieces} lines without a number around {gaps} gaps"
    );
    Ok(got)
}

/// 600,000 lines (60 MB) within Nomad's default ten files of 10 MB: all of them arrive.
#[tokio::test]
async fn every_line_arrives_within_the_kept_files() -> Result<()> {
    let (_fake, target) = rotating(10 << 20, 10).await?;
    conformance::run(target, conformance::every_line_arrives_under_rotation).await
}

/// A reader that stops for a while as the task writes 20 MB through two kept files of
/// 256 KiB is told of the gap when it goes on, with the stream it is in, and then gets
/// every byte still kept, in order and once.
#[tokio::test]
async fn a_reader_behind_the_rotation_is_told_of_the_gap() -> Result<()> {
    let (_fake, target) = rotating(256 * 1024, 2).await?;
    conformance::run(target, |ctx: Ctx| async move {
        const N: u64 = 200_000;
        let handle = ctx.backend.launch(&ctx.spec(&chatty(N, 0.5))).await?;
        let mut stream = ctx.backend.logs(&handle, &LogFrom::start());
        let mut lines = Vec::new();
        while lines.len() < 100 {
            if let LogItem::Line(l) = stream.next().await.context("ended early")?? {
                lines.push(l);
            }
        }
        ctx.wait(&handle).await?;
        let mut gaps = Vec::new();
        while let Some(item) = stream.next().await {
            match item? {
                LogItem::Line(l) => lines.push(l),
                LogItem::Gap(g) => gaps.push(g),
            }
        }
        ensure!(!gaps.is_empty(), "no gap reported");
        ensure!(
            gaps.iter().all(|g| g.reason.contains("rotated away")),
            "{gaps:?}"
        );
        let out = numbered(&lines, LogStream::Stdout, gaps.len())?;
        ensure!(out.windows(2).all(|w| w[0] < w[1]), "out of order or twice");
        // From the last gap on, every line the kept files held.
        let last_jump = out
            .windows(2)
            .rposition(|w| w[1] != w[0] + 1)
            .map_or(0, |i| i + 1);
        exactly(&out[last_jump..], out[last_jump], N, 1).context("stdout after the gap")?;
        Ok(())
    })
    .await
}

/// A reader that comes back (a restarted engine) after its file was removed hears of the
/// gap first, then gets what the kept files hold, to the end.
#[tokio::test]
async fn a_resumed_read_whose_file_was_removed_reports_the_gap() -> Result<()> {
    let (fake, target) = rotating(256 * 1024, 2).await?;
    conformance::run(target, |ctx: Ctx| async move {
        const N: u64 = 100_000;
        let handle = ctx.backend.launch(&ctx.spec(&chatty(N, 0.5))).await?;
        let mut stream = ctx.backend.logs(&handle, &LogFrom::start());
        let (mut first, mut first_gaps) = (Vec::<LogLine>::new(), 0);
        while first
            .iter()
            .filter(|l| l.stream == LogStream::Stdout)
            .count()
            < 50
        {
            match stream.next().await.context("ended early")?? {
                LogItem::Line(l) => first.push(l),
                LogItem::Gap(_) => first_gaps += 1,
            }
        }
        drop(stream);
        ctx.wait(&handle).await?;
        let last = |s: LogStream| {
            first
                .iter()
                .rev()
                .find(|l| l.stream == s)
                .and_then(|l| l.cursor.clone())
        };
        let from = LogFrom {
            since: None,
            stdout: last(LogStream::Stdout),
            stderr: last(LogStream::Stderr),
        };
        ensure!(
            from.stdout.as_deref().is_some_and(|c| c.contains('@')),
            "cursors name the file: {from:?}"
        );
        let restarted = NomadBackend::new(NomadConfig::new(fake.address.clone()))?;
        let (rest, gaps) = collect(&restarted, &handle, &from).await?;
        ensure!(
            gaps.iter()
                .any(|(at, g)| *at == 0 && g.reason.contains("rotated away")),
            "{gaps:?}"
        );
        let out = numbered(&rest, LogStream::Stdout, gaps.len())?;
        let had = numbered(&first, LogStream::Stdout, first_gaps)?;
        ensure!(out.first() > had.last(), "a line twice");
        exactly(&out, out[0], N, 1).context("stdout after the gap")?;
        Ok(())
    })
    .await
}
