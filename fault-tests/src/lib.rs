//! walship-fault: the fault-injection harness of walship.
//!
//! It owns the simulated world — a seeded network ([`net::SimNet`]), clock
//! ([`clock::SimClock`]) and randomness ([`rng::SimRng`]); the simulated disk
//! is `walship_wal::sim::SimStorage` — and runs the real sans-IO primary and
//! replica cores in it: the deterministic simulator (`walship-fault sim`) and
//! the failure-matrix conformance run (`walship-fault matrix`), one scenario
//! per ID of `spec/failure-matrix.md`.
//!
//! It does not own any protocol logic: everything it checks is the behaviour
//! of the cores, the WAL and the snapshot code it drives.
//!
//! ```
//! use walship_fault::{net::{NetConfig, SimNet}, rng::SimRng};
//! let mut net = SimNet::new(NetConfig::default(), SimRng::new(42));
//! let conn = net.connect(0, 1, 0).expect("no partition yet");
//! net.send(conn, 0, b"hello", 0);
//! ```

#![forbid(unsafe_code)]

pub mod check;
pub mod clock;
pub mod matrix;
pub mod net;
pub mod rng;
pub mod sim;
pub mod snapshot_sweep;
pub mod trace;
pub mod world;
