//! The run's trace: every event the simulator decides or observes, hashed
//! into one value (the trace hash) and kept in a bounded ring of recent
//! events for failure reports.

use std::collections::VecDeque;
use std::fmt::Write as _;

/// Upper bound on the events kept for a failure report.
pub const TRACE_TAIL_EVENTS: usize = 64;

/// One line of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Simulated time of the event.
    pub at_ms: u64,
    /// Step number of the simulator when it happened.
    pub step: u64,
    /// Human-readable description; it is also what is hashed.
    pub what: String,
}

/// Running hash plus the most recent events.
#[derive(Debug, Clone)]
pub struct Trace {
    hash: u64,
    events: u64,
    tail: VecDeque<TraceEvent>,
    /// Every event, kept only when asked for (`walship-fault sim --trace`).
    full: Option<Vec<TraceEvent>>,
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            tail: VecDeque::with_capacity(TRACE_TAIL_EVENTS),
            full: None,
        }
    }

    /// Keeps every event from now on (memory grows with the run).
    pub fn keep_all(&mut self) {
        if self.full.is_none() {
            self.full = Some(Vec::new());
        }
    }

    /// Every event recorded since [`Trace::keep_all`], if it was called.
    pub fn all(&self) -> Option<&[TraceEvent]> {
        self.full.as_deref()
    }

    /// Records one event: folds it into the hash and keeps it in the tail.
    pub fn record(&mut self, at_ms: u64, step: u64, what: String) {
        let mut h = self.hash;
        for b in at_ms
            .to_le_bytes()
            .iter()
            .chain(step.to_le_bytes().iter())
            .chain(what.as_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.hash = h;
        self.events += 1;
        if self.tail.len() == TRACE_TAIL_EVENTS {
            self.tail.pop_front();
        }
        let e = TraceEvent { at_ms, step, what };
        if let Some(full) = &mut self.full {
            full.push(e.clone());
        }
        self.tail.push_back(e);
    }

    /// The hash of every event recorded so far, in order.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// How many events were recorded.
    pub fn len(&self) -> u64 {
        self.events
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The most recent events, oldest first.
    pub fn tail(&self) -> impl Iterator<Item = &TraceEvent> {
        self.tail.iter()
    }

    /// The recent events as readable lines.
    pub fn render_tail(&self) -> String {
        let mut out = String::new();
        for e in &self.tail {
            let _ = writeln!(out, "  [step {:>6} t={:>8}ms] {}", e.step, e.at_ms, e.what);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_order_and_content() {
        let mut a = Trace::new();
        a.record(1, 1, "x".into());
        a.record(2, 2, "y".into());
        let mut b = Trace::new();
        b.record(2, 2, "y".into());
        b.record(1, 1, "x".into());
        assert_ne!(a.hash(), b.hash());
        let mut c = Trace::new();
        c.record(1, 1, "x".into());
        c.record(2, 2, "y".into());
        assert_eq!(a.hash(), c.hash());
    }

    #[test]
    fn tail_is_bounded() {
        let mut t = Trace::new();
        for i in 0..(TRACE_TAIL_EVENTS as u64 + 10) {
            t.record(i, i, format!("e{i}"));
        }
        assert_eq!(t.tail().count(), TRACE_TAIL_EVENTS);
        assert_eq!(t.tail().next().map(|e| e.step), Some(10));
    }
}
