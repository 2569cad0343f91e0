//! An endpoint's adaptive concurrency window: how many attempts it may have on the wire.
//!
//! A receiver that hangs or times out should hold few of herald's slots without anyone
//! configuring it; one that answers should get up to its configured concurrency. So the window
//! is AIMD, as TCP's congestion window (and Vector's adaptive request concurrency): it starts
//! at one attempt, grows by one per prompt answer while in slow start (doubling per round trip)
//! and by one per window's worth of answers after that, and halves on every timeout, refused
//! connection or back-pressure answer (429, 503). A hung endpoint therefore sits at one attempt
//! in flight, whatever `endpoint_concurrency` says.

use crate::model::{Attempt, ErrorKind};

/// What an attempt says about the receiver's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pace {
    /// It answered (success or not): it can take more.
    Answered,
    /// It timed out, refused the connection, failed mid-way or asked to slow down.
    Overloaded,
}

/// How an attempt paces its endpoint.
pub(crate) fn pace(attempt: &Attempt) -> Pace {
    let overloaded = matches!(
        attempt.error,
        Some(ErrorKind::Timeout | ErrorKind::Connect | ErrorKind::Transport | ErrorKind::Tls)
    ) || matches!(attempt.status_code, Some(429 | 503));
    if overloaded {
        Pace::Overloaded
    } else {
        Pace::Answered
    }
}

/// One endpoint's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    limit: usize,
    ceiling: usize,
    slow_start: bool,
    /// Answers since the last increase (congestion avoidance).
    credit: usize,
}

impl Window {
    /// A new window: one attempt, growing up to `ceiling`.
    pub(crate) fn new(ceiling: usize) -> Window {
        Window {
            limit: 1,
            ceiling: ceiling.max(1),
            slow_start: true,
            credit: 0,
        }
    }

    /// Attempts allowed in flight now.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Adjusts the window for one finished attempt.
    pub(crate) fn record(&mut self, pace: Pace) {
        match pace {
            Pace::Answered if self.slow_start => self.limit = (self.limit + 1).min(self.ceiling),
            Pace::Answered => {
                self.credit += 1;
                if self.credit >= self.limit {
                    self.credit = 0;
                    self.limit = (self.limit + 1).min(self.ceiling);
                }
            }
            Pace::Overloaded => {
                self.limit = (self.limit / 2).max(1);
                self.slow_start = false;
                self.credit = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(status: Option<u16>, error: Option<ErrorKind>) -> Attempt {
        Attempt {
            attempt: 1,
            cycle: 1,
            started_at: 0,
            duration_ms: 1,
            status_code: status,
            error,
            error_detail: None,
            response_excerpt: String::new(),
            success: error.is_none(),
        }
    }

    #[test]
    fn pace_table() {
        let rows = [
            (Some(200), None, Pace::Answered),
            (Some(500), Some(ErrorKind::Rejected), Pace::Answered),
            (Some(410), Some(ErrorKind::Gone), Pace::Answered),
            (Some(429), Some(ErrorKind::Rejected), Pace::Overloaded),
            (Some(503), Some(ErrorKind::Rejected), Pace::Overloaded),
            (None, Some(ErrorKind::Timeout), Pace::Overloaded),
            (None, Some(ErrorKind::Connect), Pace::Overloaded),
            (None, Some(ErrorKind::Transport), Pace::Overloaded),
            (None, Some(ErrorKind::Refused), Pace::Answered),
        ];
        for (status, error, expected) in rows {
            assert_eq!(
                pace(&attempt(status, error)),
                expected,
                "{status:?} {error:?}"
            );
        }
    }

    #[test]
    fn slow_start_doubles_then_halving_and_additive_growth() {
        let mut window = Window::new(16);
        assert_eq!(window.limit(), 1);
        for _ in 0..20 {
            window.record(Pace::Answered);
        }
        assert_eq!(
            window.limit(),
            16,
            "slow start reaches the ceiling and stays"
        );
        window.record(Pace::Overloaded);
        assert_eq!(window.limit(), 8);
        // Congestion avoidance: one more per window's worth of answers.
        for _ in 0..7 {
            window.record(Pace::Answered);
        }
        assert_eq!(window.limit(), 8);
        window.record(Pace::Answered);
        assert_eq!(window.limit(), 9);
        for _ in 0..10 {
            window.record(Pace::Overloaded);
        }
        assert_eq!(window.limit(), 1, "a hung receiver holds one attempt");
    }
}
