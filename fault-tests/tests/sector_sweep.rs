//! FM-X.6 / FM-X.7: a whole-WAL single-sector sweep over a healthy, cleanly shut down
//! single-node primary (quorum 0, `state/commit` == last lsn). Every 512-byte block of every
//! segment file is, in turn, zeroed and (separately) hit by a one-bit flip, each on a fresh
//! copy of the data directory. Every case must end either as corruption or as a torn tail
//! strictly above the commit watermark — both in the recovery tool's verdict
//! (`walship_recovery::cmd::verify`) and on the node's open path (`Primary::open`). Before
//! the commit-watermark check, damage in the last sector was cut as a torn tail and the
//! node started below what it had acknowledged.

use std::path::{Path, PathBuf};

use walship_node::primary::{Primary, PrimaryConfig, PrimaryError, Quorum};
use walship_recovery::cli::Common;
use walship_recovery::exit::Exit;
use walship_recovery::report::WalState;
use walship_wal::record::DEFAULT_MAX_RECORD_BYTES;
use walship_wal::state::NodeDir;
use walship_wal::{FsStorage, Lsn, WalError};
use walship_wire::TlsFiles;

const SECTOR: usize = 512;
const RECORDS: u64 = 24;

fn config(data_dir: &Path, certs: &Path) -> PrimaryConfig {
    let mut c = PrimaryConfig::new(
        "n1",
        "sweep",
        data_dir,
        "127.0.0.1:0".parse().expect("addr"),
        vec!["n1".into()],
        TlsFiles::for_node(certs, "n1"),
    );
    c.quorum = Quorum::LocalOnly;
    // Several segments: damage in sealed segments and in the last one's header is swept too.
    c.segment_size_bytes = 4096;
    c
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).expect("copy");
        }
    }
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

fn verify(dir: &Path) -> (Exit, WalState, Option<(Lsn, Lsn)>) {
    let common = Common {
        json: true,
        max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
    };
    let out = walship_recovery::cmd::verify::verify(dir, &common, false).expect("verify runs");
    let loss = out
        .report
        .acknowledged_records_lost
        .map(|l| (l.log_end, l.commit_lsn));
    (out.exit, out.report.wal.state, loss)
}

/// One damaged copy: judged by the recovery tool and by the node's open path. Returns false
/// (nothing judged) when the damage leaves the segment unchanged (zeroing a block that is
/// already zero, e.g. a preallocated tail): that is no damage.
async fn judge(
    case: &str,
    pristine: &Path,
    work: &Path,
    certs: &Path,
    damage: impl Fn(&mut [u8]),
    seg: usize,
    commit: Lsn,
) -> bool {
    for (round, dir) in ["tool", "node"].iter().enumerate() {
        let dir = work.join(format!("{case}-{dir}"));
        copy_dir(pristine, &dir);
        let path = segments(&dir)[seg].clone();
        let mut bytes = std::fs::read(&path).expect("read segment");
        let original = bytes.clone();
        damage(&mut bytes);
        if bytes == original {
            return false;
        }
        std::fs::write(&path, &bytes).expect("write segment");
        if round == 0 {
            let (exit, state, loss) = verify(&dir);
            let torn_above = matches!(state, WalState::TornTail { lsn, .. } if lsn > commit);
            assert!(
                exit == Exit::Corruption || (exit == Exit::Ok && torn_above),
                "{case}: walship-recover verify says {exit:?} with {state:?} (loss {loss:?}, commit {commit})"
            );
            if exit == Exit::Corruption && !state.is_corrupt() {
                assert!(
                    matches!(loss, Some((end, c)) if end < c && c == commit),
                    "{case}: exit 3 without a WAL corruption must be an acknowledged loss: {loss:?}"
                );
            }
        } else {
            match Primary::open(config(&dir, certs)) {
                Err(PrimaryError::Wal(WalError::Corruption(_))) => {
                    assert!(
                        std::fs::read(&path).expect("read segment") == bytes,
                        "{case}: a refused open changed the damaged segment"
                    );
                }
                Err(PrimaryError::AcknowledgedRecordsLost {
                    log_end,
                    commit_lsn,
                    ..
                }) => {
                    assert!(
                        log_end < commit_lsn && commit_lsn == commit,
                        "{case}: log_end {log_end} commit {commit_lsn}"
                    );
                    // The refusal comes before any cut: every byte stays for the operator.
                    assert!(
                        std::fs::read(&path).expect("read segment") == bytes,
                        "{case}: a refused open cut the damaged segment"
                    );
                }
                Ok(p) => {
                    let durable = p.durable_lsn();
                    p.shutdown().await;
                    assert!(
                        durable >= commit,
                        "{case}: the primary started at lsn {durable}, below its commit watermark {commit}"
                    );
                }
                Err(e) => panic!("{case}: unexpected open error: {e}"),
            }
        }
    }
    true
}

#[tokio::test]
async fn fm_x_6_every_single_sector_zeroed_or_bit_flipped_is_reported_as_corruption() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    walship_wire::generate(&certs, &["n1"]).expect("certs");
    let pristine = tmp.path().join("pristine");

    // A healthy node: records of varied sizes, acknowledged, then a clean shutdown.
    let primary = Primary::open(config(&pristine, &certs)).expect("open");
    for i in 1..=RECORDS {
        let len = (i as usize * 131) % 700 + 1;
        let payload: Vec<u8> = (0..len).map(|k| (k as u64 * 7 + i) as u8).collect();
        assert_eq!(primary.append(payload).await.expect("append"), i);
    }
    primary.shutdown().await;
    let commit = NodeDir::open(FsStorage, &pristine)
        .expect("node dir")
        .commit_lsn()
        .expect("state/commit");
    assert_eq!(
        commit, RECORDS,
        "a clean shutdown persists the final watermark"
    );
    let (exit, state, _) = verify(&pristine);
    assert_eq!((exit, state), (Exit::Ok, WalState::Clean), "pristine copy");

    let segs = segments(&pristine);
    assert!(segs.len() >= 2, "{} segments", segs.len());
    let work = tmp.path().join("work");
    let mut cases = 0;
    for (si, seg) in segs.iter().enumerate() {
        let len = std::fs::metadata(seg).expect("stat").len() as usize;
        for (block, start) in (0..len).step_by(SECTOR).enumerate() {
            let end = (start + SECTOR).min(len);
            let name = seg
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let zeroed = judge(
                &format!("{name}-block{block}-zeroed"),
                &pristine,
                &work,
                &certs,
                |b| b[start..end].fill(0),
                si,
                commit,
            )
            .await;
            // A bit somewhere inside the block, varying with the block.
            let at = start + (block * 97 + 13) % (end - start);
            let bit = 1u8 << (block % 8);
            let flipped = judge(
                &format!("{name}-block{block}-flip-{at}-{bit:#04x}"),
                &pristine,
                &work,
                &certs,
                |b| b[at] ^= bit,
                si,
                commit,
            )
            .await;
            assert!(flipped, "a bit flip always changes the segment");
            cases += 1 + u32::from(zeroed);
        }
    }
    assert!(cases >= 20, "only {cases} cases");
}
