//! `dump DIR [--from LSN] [--to LSN] [--payload hex|len]`: record headers and
//! payloads, streamed (the JSON document's `records` array is written as the
//! scan goes, so a large log never sits in memory).

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::Path;

use walship_wal::control::ControlRecord;
use walship_wal::Lsn;

use crate::cli::{Common, PayloadFormat};
use crate::cmd::scan_options;
use crate::cmd::text::{members_text, wal_state_line};
use crate::datadir::DataDir;
use crate::error::RecoverError;
use crate::exit::Exit;
use crate::report::{DumpControl, DumpMember, DumpRecord, WalState, SCHEMA_VERSION};

/// Runs `dump`, writing to `out`: exit 3 if a corruption stops the dump before `--to`, else 0.
pub fn dump(
    dir: &Path,
    from: Option<Lsn>,
    to: Option<Lsn>,
    payload: PayloadFormat,
    common: &Common,
    out: &mut dyn Write,
) -> Result<Exit, RecoverError> {
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(RecoverError::BadInput {
                message: format!("--from {f} is above --to {t}"),
            });
        }
    }
    let d = DataDir::open_locked(dir)?;
    let json = common.json;
    let io = |source| RecoverError::Io {
        op: "write",
        path: "<stdout>".into(),
        source,
    };
    let dir_text = dir.display().to_string();
    if json {
        write!(
            out,
            "{{\"schema_version\":{SCHEMA_VERSION},\"command\":\"dump\",\"dir\":{},\"from_lsn\":{},\"to_lsn\":{},\"records\":[",
            json_value(&dir_text)?,
            json_value(&from)?,
            json_value(&to)?
        )
        .map_err(io)?;
    } else {
        writeln!(out, "dump {dir_text}").map_err(io)?;
    }
    let mut written = 0u64;
    let mut write_err: Option<io::Error> = None;
    let scan = d.scan(scan_options(common), None, &mut |seg, offset, view| {
        let lsn = view.lsn();
        if to.is_some_and(|t| lsn > t) {
            return ControlFlow::Break(());
        }
        if from.is_some_and(|f| lsn < f) {
            return ControlFlow::Continue(());
        }
        let h = view.header();
        let rec = DumpRecord {
            lsn,
            epoch: h.epoch,
            crc: h.crc,
            prev_crc: h.prev_crc,
            payload_len: h.payload_len,
            segment: seg
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            offset,
            payload_hex: (payload == PayloadFormat::Hex).then(|| hex::encode(view.payload())),
            // The scan's decode verified the body of every control record it visits.
            control: view
                .is_control()
                .then(|| ControlRecord::decode(view.payload()).ok())
                .flatten()
                .map(|c| match c {
                    ControlRecord::EpochStart { epoch, primary } => {
                        DumpControl::EpochStart { epoch, primary }
                    }
                    ControlRecord::Configuration { epoch, config } => DumpControl::Configuration {
                        epoch,
                        generation: config.generation,
                        forced: config.forced,
                        members: config.members.iter().map(DumpMember::from).collect(),
                    },
                }),
        };
        let r = if json {
            write_json_record(out, written == 0, &rec)
        } else {
            write_text_record(out, &rec)
        };
        written += 1;
        match r {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_err = Some(e);
                ControlFlow::Break(())
            }
        }
    })?;
    if let Some(e) = write_err {
        return Err(io(e));
    }
    let state = WalState::from_end(&scan.end);
    let exit = if state.is_corrupt() {
        Exit::Corruption
    } else {
        Exit::Ok
    };
    if json {
        writeln!(
            out,
            "],\"state\":{},\"exit_code\":{}}}",
            json_value(&state)?,
            exit.code()
        )
        .map_err(io)?;
    } else {
        writeln!(out, "{written} records; state: {}", wal_state_line(&state)).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(exit)
}

fn json_value<T: serde::Serialize>(v: &T) -> Result<String, RecoverError> {
    serde_json::to_string(v).map_err(|e| RecoverError::Internal {
        message: format!("dump output does not serialise: {e}"),
    })
}

fn write_json_record(out: &mut dyn Write, first: bool, rec: &DumpRecord) -> io::Result<()> {
    if !first {
        out.write_all(b",")?;
    }
    out.write_all(b"\n")?;
    serde_json::to_writer(&mut *out, rec).map_err(io::Error::other)
}

fn write_text_record(out: &mut dyn Write, rec: &DumpRecord) -> io::Result<()> {
    write!(
        out,
        "lsn={} epoch={} crc={:#010x} prev_crc={:#010x} len={} segment={} offset={}",
        rec.lsn, rec.epoch, rec.crc, rec.prev_crc, rec.payload_len, rec.segment, rec.offset
    )?;
    match &rec.control {
        Some(DumpControl::EpochStart { epoch, primary }) => {
            write!(out, " control=epoch-start(epoch={epoch} primary={primary})")?;
        }
        Some(DumpControl::Configuration {
            epoch,
            generation,
            forced,
            members,
        }) => {
            let forced = if *forced { " FORCED" } else { "" };
            write!(
                out,
                " control=configuration(epoch={epoch} generation={generation}{forced} members={})",
                members_text(members)
            )?;
        }
        None => {}
    }
    if let Some(h) = &rec.payload_hex {
        write!(out, " payload={h}")?;
    }
    writeln!(out)
}
