#!/usr/bin/env bash
# Many packs between gcs: builds a repository with N packs (one add + commit of a small
# file each, gc.auto_packs = 0 so nothing repacks), then times commit, log and status.
# Building 10,000 packs takes several minutes; the repository is reused when it has them.
#
# Usage: bash bench/manypacks.sh [PACKS]     (default 10000)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKS="${1:-10000}"
WORK="$REPO/target/bench/manypacks"
MLV="$REPO/target/release/mlv"
export MLV_AUTHOR_NAME=bench MLV_AUTHOR_EMAIL=bench@example.com
(cd "$REPO" && cargo build --release --quiet)
mkdir -p "$WORK"
cd "$WORK"
[[ -d .mlv ]] || { "$MLV" init >/dev/null && "$MLV" config --set gc.auto_packs 0; }
packs() { find .mlv/objects/pack -name '*.pack' | wc -l; }
i="$(packs)"
while [[ "$(packs)" -lt "$PACKS" ]]; do
    i=$((i + 1))
    echo "$i" > f.txt
    "$MLV" add f.txt >/dev/null
    "$MLV" commit -m "c$i" >/dev/null
done
# timed LABEL CMD...: best of three, wall and CPU seconds.
timed() {
    local label="$1"; shift
    for _ in 1 2 3; do
        /usr/bin/time -f "%e %U %S" -o "$WORK/t" "$@" >/dev/null
        cat "$WORK/t"
    done | sort -n | head -1 | awk -v l="$label" '{ printf "| %s | %.0f ms | %.0f ms |\n", l, $1 * 1000, ($2 + $3) * 1000 }'
}
echo "| command ($(packs) packs, $("$MLV" log --oneline | wc -l) commits) | wall | CPU |"
echo "|---|---:|---:|"
timed "edit, add and commit" sh -c "date +%s%N >> f.txt && '$MLV' add f.txt && '$MLV' commit -m more"
timed "log -n 1" "$MLV" log -n 1
timed "log (every commit)" "$MLV" log
timed "status" "$MLV" status
