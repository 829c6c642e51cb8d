#!/usr/bin/env bash
# walship majority commit vs PostgreSQL synchronous replication, in one run (issue 14).
#
# 1. Runs the PostgreSQL baseline (a primary + one synchronous streaming standby on loopback,
#    pgbench inserting 1 KiB rows, fsync=on) at 1, 16 and 64 clients with
#    synchronous_commit=on (acknowledged after the standby's flush) and =local.
# 2. Runs walship's replication bench with those figures passed in (WALSHIP_BENCH_PG,
#    WALSHIP_BENCH_PG_LOCAL), so it prints majority@N / PostgreSQL@N beside its own points
#    (1 KiB records, 1/16/64 writers: the same record size and client counts).
#
# Usage: bench/compare_pg.sh            (from anywhere inside the repository)
# Env:
#   WALSHIP_PG_BASELINE  path of pg_sync_baseline.sh
#                        (default: ../shared/bench/pg_sync_baseline.sh from the project root)
#   WALSHIP_PG_SECS      seconds per PostgreSQL point (default 10)
#   WALSHIP_BENCH_*      passed through to the bench (WALSHIP_BENCH_SECS, _STAGES=1, ...)
#
# PostgreSQL is NOT installed by this script, nor by CI. Install it as the baseline script
# says, as root:  apt-get update && apt-get install -y postgresql postgresql-contrib
# The baseline runs PostgreSQL as the `postgres` user through `su`, so this must run as root.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASELINE=${WALSHIP_PG_BASELINE:-$ROOT/../shared/bench/pg_sync_baseline.sh}
PG_SECS=${WALSHIP_PG_SECS:-10}
CLIENTS="1 16 64"   # the bench's writer counts (node/benches/repl_bench.rs, WRITERS)

die() { echo "compare_pg.sh: $*" >&2; exit 1; }

[ -f "$BASELINE" ] || die "PostgreSQL baseline script not found at $BASELINE (set WALSHIP_PG_BASELINE)"
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || ! command -v pgbench >/dev/null 2>&1; then
  die "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin or no pgbench). Install it first, as root:
  apt-get update && apt-get install -y postgresql postgresql-contrib
(this script and CI never install it)."
fi
[ "$(id -u)" -eq 0 ] || die "must run as root: the baseline starts PostgreSQL as the postgres user via su"
id postgres >/dev/null 2>&1 || die "no postgres user: is the postgresql package installed?"
grep -q "repeat('ab', 1024)" "$BASELINE" \
  || die "$BASELINE does not insert 1 KiB rows; the bench uses 1 KiB records"

PGVER=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1 | awk -F/ '{print $5}')
echo "== PostgreSQL $PGVER baseline: $BASELINE $PG_SECS $CLIENTS"
echo "   load before: $(cut -d' ' -f1-3 /proc/loadavg)"
OUT=$(bash "$BASELINE" "$PG_SECS" $CLIENTS)
echo "$OUT"

# Lines: synchronous_commit=on|local clients=N tps=... latency_avg_ms=...
figures() {
  echo "$OUT" | awk -v mode="synchronous_commit=$1" '
    $1 == mode {
      c = ""; t = "";
      for (i = 2; i <= NF; i++) {
        split($i, kv, "=");
        if (kv[1] == "clients") c = kv[2];
        if (kv[1] == "tps") t = kv[2];
      }
      if (c != "" && t != "") { printf "%s%s=%s", sep, c, t; sep = "," }
    }'
}
PG_ON=$(figures on)
PG_LOCAL=$(figures local)
for c in $CLIENTS; do
  case ",$PG_ON," in
    *",$c="[0-9]*) ;;
    *) die "no synchronous_commit=on tps for $c clients in the baseline's output (see above)";;
  esac
done

echo
echo "== walship repl_bench with WALSHIP_BENCH_PG=$PG_ON WALSHIP_BENCH_PG_LOCAL=$PG_LOCAL"
echo "   load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cd "$ROOT"
WALSHIP_BENCH_PG="$PG_ON" WALSHIP_BENCH_PG_LOCAL="$PG_LOCAL" \
  nice -n 10 cargo bench -p walship-node --bench repl_bench
echo "   load after: $(cut -d' ' -f1-3 /proc/loadavg)"
