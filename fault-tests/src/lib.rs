//! walship-fault: the fault-injection harness of walship.
//!
//! It owns the simulated world — a seeded network ([`net::SimNet`]), clock
//! ([`clock::SimClock`]) and randomness ([`rng::SimRng`]); the simulated disk
//! is `walship_wal::sim::SimStorage` — and runs the real sans-IO primary and
//! replica cores and the real WAL in it ([`world::World`] is their driver,
//! as the tokio drivers are in production). On top:
//!
//! * the deterministic simulator ([`sim`], `walship-fault sim`): a random
//!   workload of appends checked after every step by the invariant checkers
//!   of [`check`] (safety phase), then healed and required to converge
//!   within bounded simulated time (liveness phase). Its fault vocabulary
//!   (spec/failure-matrix.md, "The random simulator's fault vocabulary"):
//!   - crashes, torn or not, and restarts (every halted replica is crashed
//!     and restarted once: it must come back halted, through the same
//!     `walship_replica::halt::start_mode` decision production makes);
//!   - partitions (both ways or one way), transport noise, slow links,
//!     small MTUs;
//!   - sender (byzantine) frame faults ([`world::FrameFault`]): corrupt,
//!     skipped, duplicated, reordered records, epoch regression, malformed
//!     batch headers, a crc-valid record with a wrong `prev_crc`, and an
//!     older-epoch primary's `Welcome`;
//!   - disk faults: every fsync fails; **one** fsync fails (dropping the
//!     file's dirty pages) and later ones succeed, after which a node still
//!     running loses power; disk full;
//!   - primary snapshots with WAL truncation (so lagging replicas install
//!     snapshots), and replaced replica disks (30% of seeds, or on request);
//! * failure-matrix conformance ([`matrix`], `walship-fault matrix`): one
//!   scenario per ID of `spec/failure-matrix.md`, printing
//!   `ID | failure | required outcome | observed | pass/fail`, failing when an
//!   ID has no scenario or its outcome differs;
//! * a crash sweep of the snapshot install ([`snapshot_sweep`]);
//! * automatic failover ([`failover`], `walship-fault failover`): N nodes
//!   each running the production election core and, as it decides, the
//!   primary or the replica executor on the same simulated disk; seed 000's
//!   failure scenarios 1, 2, 3, 5, 8 as a table, Raft's figure 8 schedule,
//!   and random failover runs, with the failover invariants judged after
//!   every step.
//!
//! It owns no protocol logic: everything it checks is the behaviour of the
//! cores, the WAL and the snapshot code it drives. The real-process tests
//! (kill -9, UDP proxy) live in this crate's `tests/real_*`.
//!
//! # Determinism and replay
//!
//! One u64 seed decides everything: the options it expands to
//! ([`sim::SimOptions::from_seed`], printed with every failure), the
//! workload, the network, the disks. The trace hash of a run is a function of
//! the seed and the code; `tests/sim.rs` checks that. A failing seed prints
//! the invariant, the spec IDs it proves, the expanded options and the last
//! events; `walship-fault sim --seed S --trace` prints every event of the run.
//!
//! ```text
//! walship-fault sim --seed 42 [--steps 300] [--trace] [--verbose]
//! walship-fault sim --seeds 0..1000
//! walship-fault matrix [--id FM-6] [--spec path/to/failure-matrix.md]
//! walship-fault failover [--scenario 8 --nodes 5 --quorum -1 --trace]
//! walship-fault failover --seeds 0..300
//! WALSHIP_SIM_SEEDS=2000 cargo test -p walship-fault --test sim
//! WALSHIP_FAILOVER_SEEDS=500 cargo test -p walship-fault --test failover
//! ```
//!
//! ```
//! use walship_fault::{net::{NetConfig, SimNet}, rng::SimRng};
//! let mut net = SimNet::new(NetConfig::default(), SimRng::new(42));
//! let conn = net.connect(0, 1, 0).expect("no partition yet");
//! net.send(conn, 0, b"hello", 0);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod clock;
pub mod failover;
pub mod matrix;
pub mod net;
pub mod rng;
pub mod sim;
pub mod snapshot_sweep;
pub mod trace;
pub mod world;
