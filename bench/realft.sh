#!/usr/bin/env bash
# More real fine-tunes of all-MiniLM-L6-v2, trained here with the scripts that trained the shared
# ones (../shared/data/minilm/src), and what mlv stores for each against the paper's BitX and
# zstd -19 of the difference (../shared/tools/paper_bitx.py on the same files).
#
#   bash bench/realft.sh [--python PY]
#
# Needs torch 2.15.0 and transformers 5.24.0 for PY (default python3), e.g. in a venv:
#   python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.15.0 transformers==5.24.0 safetensors numpy
#   bash bench/realft.sh --python /tmp/tvenv/bin/python
# Training takes 1-5 minutes per fine-tune on 2 cores (about 30 in all); finished ones are kept
# in target/realft and not trained again. Writes target/realft/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
[[ "${1:-}" == "--python" ]] && PY="$2"
SHARED=../shared/data/minilm
OUT=target/realft
MLV="$PWD/target/release/mlv"
cargo build --release --quiet
[[ -f target/minilm/base/model.safetensors ]] || python3 "$SHARED/materialize.py" target/minilm >&2
BASE="$PWD/target/minilm/base"
mkdir -p "$OUT"
[[ -f "$OUT/sentences.json" ]] || "$PY" "$SHARED/src/make_data.py" --out "$OUT/sentences.json" >&2

# name, then train.py's arguments: tasks, dtypes, LoRA, no weight decay, a prefix, a chain.
FINETUNES=(
    "ft-h16    --task cls --seed 11 --lr 5e-5 --steps 200 --split B --save-dtype fp16"
    "ft-c16    --task contrastive --seed 12 --lr 3e-5 --steps 250 --save-dtype fp16"
    "ft-cb     --task contrastive --seed 13 --lr 2e-5 --steps 250 --save-dtype bf16"
    "ft-lb     --task cls --lora --seed 16 --lr 3e-4 --steps 200 --split B --save-dtype bf16"
    "ft-cf     --task contrastive --seed 14 --lr 2e-5 --steps 250 --save-dtype fp32"
    "ft-w0f    --task cls --wd 0 --seed 17 --lr 3e-5 --steps 200 --split A --save-dtype fp32"
    "ft-pf     --task cls --prefix bert. --seed 18 --lr 1e-4 --steps 300 --split all --save-dtype fp32"
    "ft-sf     --task cls --seed 20 --lr 1e-5 --steps 100 --split A --save-dtype fp32"
    "ft-lf     --task cls --lora --seed 15 --lr 3e-4 --steps 200 --split A --save-dtype fp32"
    "ft-h16-v2 --task cls --init $OUT/ft-h16.master_fp32.pt --seed 19 --lr 3e-5 --steps 150 --split A --save-dtype fp16"
)
for spec in "${FINETUNES[@]}"; do
    read -r name args <<< "$spec"
    [[ -f "$OUT/$name/model.safetensors" ]] && continue
    echo "training $name" >&2
    # shellcheck disable=SC2086
    "$PY" "$SHARED/src/train.py" --base "$BASE" --data "$OUT/sentences.json" --out "$OUT" --name "$name" $args > "$OUT/$name.log" 2>&1
done

# Stored bytes of `ft`'s commit in a fresh repository holding `base` then `ft`.
stored_mib() {
    local base=$1 ft=$2 repo
    repo=$(mktemp -d)
    (
        cd "$repo" && "$MLV" init > /dev/null
        for m in "$base" "$ft"; do
            rm -rf m && cp -r "$m" m && "$MLV" add m > /dev/null && "$MLV" commit -m "$(basename "$m")" > /dev/null
        done
        rm -rf m && "$MLV" checkout -f HEAD > /dev/null && for f in "$ft"/*; do cmp "$f" "m/$(basename "$f")"; done
        "$MLV" du --json | python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["stored"] / 2**20))'
    )
    rm -rf "$repo"
}

{
    echo "| fine-tune | on | paper BitX MiB | best zstd -19 MiB | mlv MiB | mlv / BitX |"
    echo "|---|---|---:|---:|---:|---:|"
    for spec in "${FINETUNES[@]}"; do
        read -r name _ <<< "$spec"
        base="$BASE"
        [[ "$name" == ft-h16-v2 ]] && base="$PWD/$OUT/ft-h16"
        read -r bitx best19 < <(python3 ../shared/tools/paper_bitx.py "$base" "$OUT/$name" | awk '/^TOTAL/ {print $5, $7}')
        mlv=$(stored_mib "$base" "$PWD/$OUT/$name")
        echo "| $name | $(basename "$base") | $bitx | $best19 | $mlv | $(python3 -c "print('%.2f' % ($mlv / $bitx))") |"
    done
} | tee "$OUT/report.md"
