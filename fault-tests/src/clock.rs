//! Simulated time.
//!
//! The cores take `now` as an argument; in the simulator `now` is this
//! clock, advanced only by the simulator's event loop. No wall-clock time is
//! read anywhere in a simulation.

/// Milliseconds of simulated time since the start of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SimClock {
    now_ms: u64,
}

impl SimClock {
    /// A clock at time 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current simulated time in milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Moves time forward to `t_ms`; time never goes back.
    pub fn advance_to(&mut self, t_ms: u64) {
        assert!(
            t_ms >= self.now_ms,
            "simulated time must not go back: now {} target {}",
            self.now_ms,
            t_ms
        );
        self.now_ms = t_ms;
    }

    /// Moves time forward by `dt_ms`.
    pub fn advance_by(&mut self, dt_ms: u64) {
        self.now_ms = self.now_ms.saturating_add(dt_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_monotonically() {
        let mut c = SimClock::new();
        c.advance_to(5);
        c.advance_by(3);
        assert_eq!(c.now_ms(), 8);
    }

    #[test]
    #[should_panic(expected = "must not go back")]
    fn going_back_panics() {
        let mut c = SimClock::new();
        c.advance_to(5);
        c.advance_to(4);
    }
}
