#!/usr/bin/env bash
# Issue 13's check, end to end with the installed `iwb`: truncation over the whole shipped sample
# (495 documents) three ways, compared row by row:
#   run 1: uninterrupted;  run 2: kill -9 at about half way, then `iwb resume 2`;
#   run 3: the same run as a Ray sweep over two local actors.
#   scripts/kill_and_resume.sh [DB]      (MAX_TOKENS, K_MAX, SHARD_DOCS, IWB set the size and the command)
set -euo pipefail
DB=${1:-$(mktemp -d)/kill_and_resume.duckdb}
IWB=${IWB:-iwb}
SHARD_DOCS=${SHARD_DOCS:-16}
ARGS=(truncation --n-docs 495 --max-tokens "${MAX_TOKENS:-24}" --param "k_max=${K_MAX:-5}" --shard-docs "$SHARD_DOCS" --no-chart)
export NO_COLOR=1

seconds() { date +%s.%N; }
t0=$(seconds); $IWB --db "$DB" run "${ARGS[@]}" 2>/dev/null; t1=$(seconds)
echo "run 1 (uninterrupted): $(echo "$t1 - $t0" | bc) s"

$IWB --db "$DB" run "${ARGS[@]}" 2>/dev/null & pid=$!
n_shards=$(( (495 + SHARD_DOCS - 1) / SHARD_DOCS ))
until [ "$(ls -d "$DB.runs/run-000002/shard-0"* 2>/dev/null | wc -l)" -ge $(( n_shards / 2 )) ]; do sleep 0.1; done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
echo "run 2 killed with $(ls -d "$DB.runs/run-000002/shard-0"* | wc -l) of $n_shards shards on disk"
t0=$(seconds); $IWB --db "$DB" resume 2 --no-chart 2>/dev/null; t1=$(seconds)
echo "run 2 resumed in $(echo "$t1 - $t0" | bc) s"

t0=$(seconds); $IWB --db "$DB" sweep "${ARGS[@]}" --ray local --actors 2 2>/dev/null; t1=$(seconds)
echo "run 3 (Ray, 2 local actors): $(echo "$t1 - $t0" | bc) s"

$IWB --db "$DB" sql "SELECT run_id, status, n_shards, shards_done, round(epoch(finished_at) - epoch(created_at), 1) AS seconds FROM runs ORDER BY run_id"
for table in truncation truncation_summary truncation_lowest tokens; do
  $IWB --db "$DB" sql "SELECT '$table' AS tab, (SELECT count(*) FROM $table WHERE run_id = 1) AS rows_run1,
    (SELECT count(*) FROM (SELECT * EXCLUDE (run_id) FROM $table WHERE run_id = 2 EXCEPT ALL SELECT * EXCLUDE (run_id) FROM $table WHERE run_id = 1)) AS run2_rows_not_in_run1,
    (SELECT count(*) FROM (SELECT * EXCLUDE (run_id) FROM $table WHERE run_id = 3 EXCEPT ALL SELECT * EXCLUDE (run_id) FROM $table WHERE run_id = 1)) AS run3_rows_not_in_run1,
    (SELECT count(*) FROM $table WHERE run_id = 2) = (SELECT count(*) FROM $table WHERE run_id = 1) AND
    (SELECT count(*) FROM $table WHERE run_id = 3) = (SELECT count(*) FROM $table WHERE run_id = 1) AS same_counts"
done
