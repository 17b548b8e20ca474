#!/usr/bin/env python3
"""FP32 fine-tunes that leave rows of weights exactly as they were, from a real FP32 base.

    python3 bench/untouched_rows.py BASE_DIR OUT_DIR

writes OUT_DIR/adamw-wd0/ and OUT_DIR/rows-only/, each a model.safetensors beside copies of
BASE_DIR's other files:

- adamw-wd0: what AdamW without weight decay (Hugging Face Trainer's default) leaves after
  ~50 steps: every weight that gets a gradient moves by an Adam-sized step, and the
  word-embedding rows of tokens the data never had (three quarters here) stay exact.
- rows-only: only a fifth of the rows of every large matrix moved, the rest exact.

The steps are random (no training), so nothing predicts their low bits: they measure what a
coder saves on the untouched rows. Needs numpy and safetensors.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def adamw_wd0(base, rng):
    out = {}
    for name, w in base.items():
        w = w.copy()
        if w.dtype == np.float32:
            step = (rng.standard_normal(w.shape) * 1e-3).astype(np.float32)
            if name.endswith("word_embeddings.weight"):
                seen = rng.random(w.shape[0]) < 0.25
                w[seen] += step[seen]
            else:
                w += step
        out[name] = w
    return out


def rows_only(base, rng):
    out = {}
    for name, w in base.items():
        w = w.copy()
        if w.dtype == np.float32 and w.ndim == 2 and w.shape[0] > 1000:
            moved = rng.random(w.shape[0]) < 0.2
            scale = 1e-3 * np.abs(w[moved]).mean()
            w[moved] += (rng.standard_normal((moved.sum(), w.shape[1])) * scale).astype(np.float32)
        out[name] = w
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    base_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    base = load_file(base_dir / "model.safetensors")
    for name, make, seed in [("adamw-wd0", adamw_wd0, 7), ("rows-only", rows_only, 1)]:
        dest = out_dir / name
        dest.mkdir(parents=True, exist_ok=True)
        for f in base_dir.iterdir():
            if f.is_file() and f.name != "model.safetensors":
                shutil.copy(f, dest / f.name)
        save_file(make(base, np.random.default_rng(seed)), dest / "model.safetensors")
        print(dest)


if __name__ == "__main__":
    main()
