//! The confirmation question of `rewind`, driven through the library entry
//! point with a scripted operator (the binary asks on a terminal only).

mod common;

use clap::Parser;
use common::{s, Node};
use walship_recovery::cli::Cli;
use walship_recovery::exit::Exit;
use walship_recovery::{run, Env};

fn rewind_answering(n: &Node, to: &str, answer: bool) -> (Exit, String, String, Vec<String>) {
    let cli =
        Cli::try_parse_from(["walship-recover", "rewind", s(&n.root), "--to", to]).expect("args");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut asked = Vec::new();
    let mut ask = |q: &str| -> std::io::Result<bool> {
        asked.push(q.to_string());
        Ok(answer)
    };
    let exit = {
        let mut env = Env::non_interactive(&mut out, &mut err);
        env.confirm = Some(&mut ask);
        env.command_line = vec!["walship-recover".into(), "rewind".into()];
        run(cli.command, &mut env)
    };
    (
        exit,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
        asked,
    )
}

#[test]
fn rewind_declined_at_the_prompt_is_refused_and_changes_nothing() {
    let n = Node::new();
    n.append_n(1, 6, "c");
    n.append_n(2, 3, "t");
    n.set_commit(6);
    let before = n.snapshot_files();
    let (exit, out, err, asked) = rewind_answering(&n, "6", false);
    assert_eq!(exit, Exit::Refused);
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].contains("will cut lsn 7..=9 (3 records"),
        "{}",
        asked[0]
    );
    assert!(asked[0].contains("epoch 2: lsn 7..=9"), "{}", asked[0]);
    assert!(asked[0].ends_with("[y/N] "), "{}", asked[0]);
    assert!(
        out.contains("REFUSED: not confirmed by the operator"),
        "{out}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(n.snapshot_files(), before);
}

#[test]
fn rewind_confirmed_at_the_prompt_cuts_and_verifies() {
    let n = Node::new();
    n.append_n(1, 6, "c");
    n.append_n(2, 3, "t");
    n.set_commit(6);
    let (exit, out, _, asked) = rewind_answering(&n, "6", true);
    assert_eq!(exit, Exit::Ok, "{out}");
    assert_eq!(asked.len(), 1);
    assert!(out.contains("done: last record is now lsn 6"), "{out}");
    assert!(out.contains("verify: clean"), "{out}");
    assert_eq!(n.last().lsn, 6);
}

#[test]
fn a_refused_commit_rule_is_decided_before_asking() {
    let n = Node::new();
    n.append_n(1, 6, "c");
    n.set_commit(6);
    let (exit, _, _, asked) = rewind_answering(&n, "3", true);
    assert_eq!(exit, Exit::Refused);
    assert!(
        asked.is_empty(),
        "no question when the answer cannot matter"
    );
}

fn rejoin_answering(replica: &Node, primary: &Node, answer: bool) -> (Exit, String, Vec<String>) {
    let cli = Cli::try_parse_from([
        "walship-recover",
        "rejoin",
        s(&replica.root),
        "--from",
        s(&primary.root),
    ])
    .expect("args");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut asked = Vec::new();
    let mut ask = |q: &str| -> std::io::Result<bool> {
        asked.push(q.to_string());
        Ok(answer)
    };
    let exit = {
        let mut env = Env::non_interactive(&mut out, &mut err);
        env.confirm = Some(&mut ask);
        env.command_line = vec!["walship-recover".into(), "rejoin".into()];
        run(cli.command, &mut env)
    };
    (exit, String::from_utf8_lossy(&out).into_owned(), asked)
}

fn diverged_pair() -> (Node, Node) {
    let primary = Node::new();
    let replica = Node::new();
    primary.append_n(1, 6, "c");
    replica.append_n(1, 6, "c");
    primary.append_n(3, 2, "p");
    replica.append_n(2, 3, "t");
    replica.set_commit(6);
    replica.halt(walship_replica::halt::HaltReason::Divergence, 7, 3);
    (primary, replica)
}

#[test]
fn rejoin_declined_at_the_prompt_is_refused_and_changes_nothing() {
    let (primary, replica) = diverged_pair();
    let before = replica.snapshot_files();
    let (exit, out, asked) = rejoin_answering(&replica, &primary, false);
    assert_eq!(exit, Exit::Refused);
    assert_eq!(asked.len(), 1);
    assert!(asked[0].contains("DIVERGED at lsn 7"), "{}", asked[0]);
    assert!(
        asked[0].contains("will cut lsn 7..=9 (3 records"),
        "{}",
        asked[0]
    );
    assert!(
        asked[0].ends_with(
            "and rejoin {}? [y/N] "
                .replace("{}", s(&primary.root))
                .as_str()
        ),
        "{}",
        asked[0]
    );
    assert!(
        out.contains("REFUSED: not confirmed by the operator"),
        "{out}"
    );
    assert_eq!(replica.snapshot_files(), before);
}

#[test]
fn rejoin_confirmed_at_the_prompt_rewinds_and_clears() {
    let (primary, replica) = diverged_pair();
    let (exit, out, asked) = rejoin_answering(&replica, &primary, true);
    assert_eq!(exit, Exit::Ok, "{out}");
    assert_eq!(
        asked.len(),
        1,
        "asked once, by rejoin (not again by the rewind)"
    );
    assert!(out.contains("done, last record is now lsn 6"), "{out}");
    assert!(out.contains("— cleared"), "{out}");
    assert_eq!(replica.last().lsn, 6);
}
