//! The anomaly rules: pure functions from what is known of a run and of its job's usual
//! runs to a finding, in words. No I/O, so every threshold is unit-tested.

use jobdock_types::{AnomalyKind, Monitoring};

/// What a job's recent successful runs looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usual {
    /// Median duration (container start → end), ms.
    pub duration_ms: i64,
    /// Median time from trigger to running, ms.
    pub start_latency_ms: Option<i64>,
    /// How many successes it was learned from.
    pub samples: usize,
}

impl Usual {
    /// Learns from the last successes' durations and start latencies (any order); `None`
    /// below `min_samples` durations.
    pub fn learn(durations_ms: &[i64], latencies_ms: &[i64], min_samples: i64) -> Option<Self> {
        if (durations_ms.len() as i64) < min_samples.max(1) {
            return None;
        }
        Some(Usual {
            duration_ms: median(durations_ms)?,
            start_latency_ms: (latencies_ms.len() as i64 >= min_samples.max(1))
                .then(|| median(latencies_ms))
                .flatten(),
            samples: durations_ms.len(),
        })
    }
}

/// The median (the lower middle of an even count).
pub fn median(values: &[i64]) -> Option<i64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len().checked_sub(1)? / 2).copied()
}

/// An anomaly to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// What.
    pub kind: AnomalyKind,
    /// What was expected and what happened.
    pub message: String,
    /// Expected value (seconds; failures for a streak).
    pub expected: Option<f64>,
    /// Observed value, same unit.
    pub observed: Option<f64>,
}

/// `1.2 s`, `4 min 12 s`, `3 h 5 min`: durations for people.
pub fn human(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn secs(ms: i64) -> Option<f64> {
    Some(ms as f64 / 1000.0)
}

/// The job's usual duration: its `expected_duration_seconds` when set, else learned.
fn usual_duration(expected_seconds: Option<i64>, usual: Option<&Usual>) -> Option<(i64, String)> {
    match (expected_seconds, usual) {
        (Some(s), _) => Some((s * 1000, "its expected_duration_seconds".to_owned())),
        (None, Some(u)) => Some((
            u.duration_ms,
            format!("the median of its last {} successful runs", u.samples),
        )),
        (None, None) => None,
    }
}

/// Where "far longer than usual" starts: max(factor × usual, usual + extra).
fn limit(usual_ms: i64, factor: f64, extra_seconds: i64) -> i64 {
    ((usual_ms as f64 * factor) as i64).max(usual_ms + extra_seconds * 1000)
}

/// `long_running`: a run that has been running `running_ms`.
pub fn long_running(
    m: &Monitoring,
    expected_seconds: Option<i64>,
    usual: Option<&Usual>,
    running_ms: i64,
) -> Option<Finding> {
    let (usual_ms, source) = usual_duration(expected_seconds, usual)?;
    let over = limit(
        usual_ms,
        m.long_running_factor,
        m.long_running_min_extra_seconds,
    );
    (running_ms > over).then(|| Finding {
        kind: AnomalyKind::LongRunning,
        message: format!(
            "running for {} and still going; this job usually takes {} ({source}), \
             so more than {} was not expected",
            human(running_ms),
            human(usual_ms),
            human(over)
        ),
        expected: secs(usual_ms),
        observed: secs(running_ms),
    })
}

/// How long a run may wait to run before it is `slow_start` (ms), when the job has a usual
/// start latency.
pub fn slow_start_after(m: &Monitoring, usual: Option<&Usual>) -> Option<i64> {
    let usual_ms = usual?.start_latency_ms?;
    Some(limit(
        usual_ms,
        m.slow_start_factor,
        m.slow_start_min_extra_seconds,
    ))
}

/// `slow_start`: a run triggered `waiting_ms` ago that is not running yet.
pub fn slow_start(m: &Monitoring, usual: Option<&Usual>, waiting_ms: i64) -> Option<Finding> {
    let usual_ms = usual?.start_latency_ms?;
    let over = slow_start_after(m, usual)?;
    (waiting_ms > over).then(|| Finding {
        kind: AnomalyKind::SlowStart,
        message: format!(
            "not running {} after its trigger; this job usually runs {} after it \
             (queue, lock wait, image pull and start), so more than {} was not expected",
            human(waiting_ms),
            human(usual_ms),
            human(over)
        ),
        expected: secs(usual_ms),
        observed: secs(waiting_ms),
    })
}

/// `stalled`: a running run whose output last moved `quiet_ms` ago.
pub fn stalled(stall_after_seconds: i64, quiet_ms: i64) -> Option<Finding> {
    (stall_after_seconds > 0 && quiet_ms > stall_after_seconds * 1000).then(|| Finding {
        kind: AnomalyKind::Stalled,
        message: format!(
            "no output for {} while running; a run is expected to write something (or a \
             `::jobdock::heartbeat` line) at least every {}",
            human(quiet_ms),
            human(stall_after_seconds * 1000)
        ),
        expected: Some(stall_after_seconds as f64),
        observed: secs(quiet_ms),
    })
}

/// `unusually_fast`: a success that took `took_ms`.
pub fn unusually_fast(
    m: &Monitoring,
    expected_seconds: Option<i64>,
    usual: Option<&Usual>,
    took_ms: i64,
) -> Option<Finding> {
    let (usual_ms, source) = usual_duration(expected_seconds, usual)?;
    let under = (usual_ms as f64 * m.unusually_fast_ratio) as i64;
    (took_ms < under).then(|| Finding {
        kind: AnomalyKind::UnusuallyFast,
        message: format!(
            "succeeded in {}; this job usually takes {} ({source}), and a success under {} \
             often means it had nothing to do (an empty load?)",
            human(took_ms),
            human(usual_ms),
            human(under)
        ),
        expected: secs(usual_ms),
        observed: secs(took_ms),
    })
}

/// `failure_streak`: raised once, when the streak reaches the job's threshold.
pub fn failure_streak(m: &Monitoring, failures_in_a_row: i64) -> Option<Finding> {
    (m.failure_streak > 0 && failures_in_a_row == m.failure_streak).then(|| Finding {
        kind: AnomalyKind::FailureStreak,
        message: format!(
            "{failures_in_a_row} runs of this job in a row did not succeed; the job needs a look"
        ),
        expected: Some(0.0),
        observed: Some(failures_in_a_row as f64),
    })
}

/// `oom_killed`.
pub fn oom_killed(memory_mb: Option<i64>) -> Finding {
    let limit = match memory_mb {
        Some(mb) => format!("its memory limit of {mb} MiB"),
        None => "its memory limit".to_owned(),
    };
    Finding {
        kind: AnomalyKind::OomKilled,
        message: format!("killed by the kernel for using more than {limit}"),
        expected: memory_mb.map(|m| m as f64),
        observed: None,
    }
}

/// `timed_out`.
pub fn timed_out(timeout_seconds: Option<i64>, ran_ms: Option<i64>) -> Finding {
    let message = match timeout_seconds {
        Some(t) => format!(
            "ran past its timeout of {} and was stopped",
            human(t * 1000)
        ),
        None => "ran past the scheduler's deadline and was stopped".to_owned(),
    };
    Finding {
        kind: AnomalyKind::TimedOut,
        message,
        expected: timeout_seconds.map(|t| t as f64),
        observed: ran_ms.and_then(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usual(ms: i64) -> Usual {
        Usual {
            duration_ms: ms,
            start_latency_ms: Some(500),
            samples: 5,
        }
    }

    #[test]
    fn nothing_is_learned_below_the_minimum_of_samples() {
        assert_eq!(Usual::learn(&[1000; 4], &[10; 4], 5), None);
        let u = Usual::learn(&[900, 1000, 5000, 1100, 1050], &[1, 2, 3, 4, 5], 5).unwrap();
        assert_eq!(
            (u.duration_ms, u.start_latency_ms, u.samples),
            (1050, Some(3), 5)
        );
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn long_running_starts_past_three_times_usual_or_usual_plus_thirty_seconds() {
        let m = Monitoring::default();
        // Short jobs: usual + 30 s wins.
        assert!(long_running(&m, None, Some(&usual(1000)), 31_000).is_none());
        let f = long_running(&m, None, Some(&usual(1000)), 31_001).unwrap();
        assert_eq!(f.kind, AnomalyKind::LongRunning);
        assert!(f.message.contains("usually takes 1.0 s"), "{}", f.message);
        assert!(f.message.contains("median of its last 5"), "{}", f.message);
        // Long jobs: 3 × usual wins.
        assert!(long_running(&m, None, Some(&usual(600_000)), 1_800_000).is_none());
        assert!(long_running(&m, None, Some(&usual(600_000)), 1_800_001).is_some());
        // Nothing learned, nothing set: silent.
        assert!(long_running(&m, None, None, i64::MAX / 2).is_none());
        // The job's own expectation beats what was learned.
        let f = long_running(&m, Some(10), Some(&usual(1000)), 40_001).unwrap();
        assert!(
            f.message.contains("expected_duration_seconds"),
            "{}",
            f.message
        );
        assert_eq!(f.expected, Some(10.0));
    }

    #[test]
    fn unusually_fast_is_a_success_under_a_fifth_of_usual() {
        let m = Monitoring::default();
        assert!(unusually_fast(&m, None, Some(&usual(1000)), 200).is_none());
        let f = unusually_fast(&m, None, Some(&usual(1000)), 199).unwrap();
        assert!(f.message.contains("succeeded in 0.2 s"), "{}", f.message);
        assert!(unusually_fast(&m, None, None, 1).is_none());
    }

    #[test]
    fn slow_start_stalled_and_streaks() {
        let m = Monitoring::default();
        assert!(slow_start(&m, Some(&usual(1)), 60_500).is_none());
        assert!(slow_start(&m, Some(&usual(1)), 60_501).is_some());
        assert!(stalled(0, i64::MAX / 2).is_none(), "0 turns it off");
        assert!(stalled(5, 5000).is_none());
        assert!(stalled(5, 5001).unwrap().message.contains("5.0 s"));
        assert!(failure_streak(&m, 2).is_none());
        assert!(failure_streak(&m, 3).is_some());
        assert!(failure_streak(&m, 4).is_none(), "raised once per streak");
        assert_eq!(human(252_000), "4 min 12 s");
        assert_eq!(human(3 * 3_600_000 + 300_000), "3 h 5 min");
    }
}
