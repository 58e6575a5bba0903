//! Where the driver reads the time: the system's clock, or tokio's (which tests pause and
//! advance, so that a multi-node simulation runs minutes of agent time in milliseconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of Unix time in seconds.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix seconds.
    fn now(&self) -> i64;

    /// How long from now until Unix second `deadline` begins; zero if it has.
    fn until(&self, deadline: i64) -> Duration;
}

/// The system's wall clock: other nodes' last-seen values are wall-clock times too.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn until(&self, deadline: i64) -> Duration {
        let deadline = UNIX_EPOCH + Duration::from_secs(u64::try_from(deadline).unwrap_or(0));
        deadline.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
    }
}

/// Unix time that advances with tokio's clock from a given start: under
/// `tokio::time::pause()` it moves only when the test advances it (or the runtime auto-advances
/// an idle paused clock).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: i64,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: i64) -> TokioClock {
        TokioClock { start, origin: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> i64 {
        let elapsed = i64::try_from(self.origin.elapsed().as_secs()).unwrap_or(i64::MAX);
        self.start.saturating_add(elapsed)
    }

    fn until(&self, deadline: i64) -> Duration {
        let offset = u64::try_from(deadline.saturating_sub(self.start)).unwrap_or(0);
        (self.origin + Duration::from_secs(offset))
            .saturating_duration_since(tokio::time::Instant::now())
    }
}
