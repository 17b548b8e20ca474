#!/usr/bin/env bash
# Content-defined chunking benchmark: a 300 MB file that is not safetensors (random bytes, so
# compression does not hide anything), committed, then edited by one byte, then by a 1 KiB
# insertion in the middle; reports the growth of .mlv for each and the ingest rate and RSS.
#
# Usage: bash bench/cdc.sh [MB]     (default 300)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MB="${1:-300}"
OUT="$REPO/target/bench/cdc"
MLV="$REPO/target/release/mlv"
export MLV_AUTHOR_NAME=bench MLV_AUTHOR_EMAIL=bench@example.com
(cd "$REPO" && cargo build --release --quiet)
rm -rf "$OUT"; mkdir -p "$OUT/work"
cd "$OUT/work"
"$MLV" init >/dev/null
head -c "$((MB * 1000000))" /dev/urandom > optimizer.pt
size() { find .mlv -type f -printf '%s\n' | awk '{ s += $1 } END { print s }'; }
step() {
    local label="$1" before after t0 t1
    before="$(size)"
    t0="$EPOCHREALTIME"
    /usr/bin/time -f "%M" -o "$OUT/rss" sh -c "'$MLV' add optimizer.pt && '$MLV' commit -q -m '$label' 2>/dev/null || '$MLV' commit -m '$label'" >/dev/null
    t1="$EPOCHREALTIME"
    after="$(size)"
    awk -v l="$label" -v g="$((after - before))" -v a="$t0" -v b="$t1" -v mb="$MB" -v rss="$(cat "$OUT/rss")" \
        'BEGIN { printf "| %s | %.1f KiB | %.2f s | %.0f MB/s | %d MiB |\n", l, g / 1024, b - a, mb / (b - a), rss / 1024 }'
}
echo "| step ($MB MB file) | .mlv growth | add + commit | rate | peak RSS |"
echo "|---|---:|---:|---:|---:|"
step "first commit"
python3 - <<PY
with open("optimizer.pt", "r+b") as f:
    f.seek($MB * 500000); b = f.read(1); f.seek($MB * 500000); f.write(bytes([b[0] ^ 1]))
PY
step "one byte changed"
python3 - <<PY
import os
with open("optimizer.pt", "rb") as f: data = f.read()
mid = len(data) // 3
with open("optimizer.pt", "wb") as f: f.write(data[:mid] + os.urandom(1024) + data[mid:])
PY
step "1 KiB inserted"
