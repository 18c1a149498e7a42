//! Where one stream of a container's output stands, as the opaque [`LogLine::cursor`] the
//! engine stores and hands back.
//!
//! An attached stream carries no timestamps, so lines are told apart by their ordinal: the
//! how-many-th line of that stream since the container started. An ordinal means the same in
//! the log driver's files only while the driver still holds the container's very first
//! record, so the cursor also carries that record's driver timestamp (the *anchor*): a
//! resumed read compares it with the first record the driver still has.
//!
//! [`LogLine::cursor`]: crate::LogLine::cursor

use std::fmt;
use std::str::FromStr;

/// One stream's position: `<ordinal>:<ts ns>:<anchor ns or ->`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DockerCursor {
    /// Lines of this stream handed out so far, counted from the container's start.
    pub ordinal: u64,
    /// When the last of them was written (ns since the epoch), as far as it is known.
    pub ts_ns: i64,
    /// The driver's timestamp (ns) of the container's first output record; `None` when it
    /// is not known, and then ordinals cannot be matched against the driver's files.
    pub anchor_ns: Option<i64>,
}

impl DockerCursor {
    /// The cursor as text. Written with `itoa` rather than `format!`: an attached stream
    /// numbers every line it hands out, millions for a chatty container.
    pub(crate) fn encode(&self) -> String {
        let mut n = itoa::Buffer::new();
        let mut s = String::with_capacity(48);
        s.push_str(n.format(self.ordinal));
        s.push(':');
        s.push_str(n.format(self.ts_ns));
        s.push(':');
        match self.anchor_ns {
            Some(a) => s.push_str(n.format(a)),
            None => s.push('-'),
        }
        s
    }
}

impl fmt::Display for DockerCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for DockerCursor {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let mut parts = s.split(':');
        let ordinal = parts.next().ok_or(())?.parse().map_err(|_| ())?;
        let ts_ns = parts.next().ok_or(())?.parse().map_err(|_| ())?;
        let anchor_ns = match parts.next().ok_or(())? {
            "-" => None,
            a => Some(a.parse().map_err(|_| ())?),
        };
        if parts.next().is_some() {
            return Err(());
        }
        Ok(Self {
            ordinal,
            ts_ns,
            anchor_ns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_an_anchor() {
        for c in [
            DockerCursor {
                ordinal: 600_000,
                ts_ns: 1_700_000_000_123_456_789,
                anchor_ns: Some(1_700_000_000_000_000_001),
            },
            DockerCursor {
                ordinal: 0,
                ts_ns: 0,
                anchor_ns: None,
            },
        ] {
            assert_eq!(c.to_string().parse::<DockerCursor>(), Ok(c));
        }
        // The text is stored with each run: it stays what earlier versions wrote.
        let c = DockerCursor {
            ordinal: 7,
            ts_ns: -5,
            anchor_ns: Some(9),
        };
        assert_eq!(c.to_string(), "7:-5:9");
        assert_eq!(
            DockerCursor {
                anchor_ns: None,
                ..c
            }
            .to_string(),
            "7:-5:-"
        );
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        for bad in ["", "12", "1:2", "1:2:3:4", "x:2:-", "1:2:y", "-1:2:-"] {
            assert!(bad.parse::<DockerCursor>().is_err(), "{bad}");
        }
    }
}
