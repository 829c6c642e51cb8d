//! FM-4.3 / FM-10.5 / FM-X.8 at the install layer: a snapshot install
//! interrupted anywhere recovers to exactly the old or the new state.

#[test]
fn fm_4_3_fm_10_5_install_interrupted_anywhere_recovers_old_or_new_never_mixed() {
    let (points, old, new) = walship_fault::snapshot_sweep::sweep(4300).expect("sweep");
    assert!(points >= 10, "only {points} interruption points");
    assert!(
        old > 0 && new > 0,
        "old {old} new {new}: both outcomes must occur"
    );
    assert_eq!(points, old + new);
}
