//! Files mlv checks out load with the reference Python `safetensors` library.
//!
//! Needs `python3` with `safetensors` and `numpy` (`pip install safetensors numpy`). Without
//! them these tests fail, unless MLV_SKIP_PYTHON_TESTS=1 is set.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::TestRepo;
use crate::common::fixtures::{self, family_repo};
use crate::common::st::{self, T, Weights};

const SCRIPT: &str = r#"
import json, sys
try:
    import numpy as np
    import safetensors
    from safetensors import safe_open
except ImportError as e:
    print("missing Python module: %s" % e, file=sys.stderr)
    sys.exit(3)
out = {}
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        raw = f.read()
    tensors = {}
    for name, info in safetensors.deserialize(raw):
        data = bytes(info["data"])
        tensors[name] = {"dtype": info["dtype"], "shape": list(info["shape"]), "nbytes": len(data), "bytesum": sum(data)}
    sums = {}
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
        for name in f.keys():
            if tensors[name]["dtype"] in ("F32", "F64", "F16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL"):
                a = f.get_tensor(name)
                a64 = a.astype(np.float64)
                sums[name] = {"dtype": str(a.dtype), "shape": list(a.shape), "sum": float(a64[np.isfinite(a64)].sum())}
    out[path] = {"tensors": tensors, "numpy": sums, "metadata": metadata}
print(json.dumps(out))
"#;

/// Runs the Python checker on `files`; None when skipped by MLV_SKIP_PYTHON_TESTS=1.
pub fn python_inspect(files: &[&Path]) -> Option<Value> {
    if std::env::var("MLV_SKIP_PYTHON_TESTS").as_deref() == Ok("1") {
        eprintln!("MLV_SKIP_PYTHON_TESTS=1: skipping the Python safetensors check");
        return None;
    }
    let out = Command::new("python3").arg("-c").arg(SCRIPT).args(files).output().unwrap_or_else(|e| {
        panic!("cannot run python3 ({e}): install Python 3 with `pip install safetensors numpy`, or set MLV_SKIP_PYTHON_TESTS=1")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() != Some(3),
        "python3 lacks a module ({}): run `pip install safetensors numpy`, or set MLV_SKIP_PYTHON_TESTS=1",
        stderr.trim()
    );
    assert!(out.status.success(), "the Python safetensors library rejected a checked-out file:\n{stderr}");
    Some(serde_json::from_slice(&out.stdout).expect("python printed invalid JSON"))
}

fn check_against(report: &Value, tensors: &[T]) {
    let got = report["tensors"].as_object().unwrap();
    assert_eq!(got.len(), tensors.len(), "tensor count: {report}");
    for t in tensors {
        let g = &got[&t.name];
        assert_eq!(g["dtype"], t.dtype.as_str(), "{}: {g}", t.name);
        assert_eq!(g["shape"], serde_json::json!(t.shape), "{}: {g}", t.name);
        assert_eq!(g["nbytes"], t.data.len(), "{}: {g}", t.name);
        assert_eq!(g["bytesum"], t.data.iter().map(|&b| b as u64).sum::<u64>(), "{}: {g}", t.name);
    }
}

#[test]
fn checked_out_f32_and_bf16_files_load_in_python_safetensors() {
    let (r, _, _) = family_repo();
    let base = fixtures::base_weights();
    let ft = fixtures::finetune_weights(&base);
    let out = r.scratch("py");
    r.ok(&["checkout", "v1"]);
    std::fs::copy(r.path("model.safetensors"), out.join("base.safetensors")).unwrap();
    r.ok(&["checkout", "v2"]);
    std::fs::copy(r.path("model.safetensors"), out.join("ft.safetensors")).unwrap();
    let (bp, fp) = (out.join("base.safetensors"), out.join("ft.safetensors"));
    let Some(v) = python_inspect(&[&bp, &fp]) else { return };
    let b = &v[bp.to_str().unwrap()];
    let f = &v[fp.to_str().unwrap()];
    check_against(b, &base.iter().map(Weights::to_f32).collect::<Vec<_>>());
    check_against(f, &ft.iter().map(Weights::to_bf16).collect::<Vec<_>>());
    assert_eq!(b["metadata"], serde_json::json!({ "format": "pt" }));
    assert_eq!(f["metadata"], serde_json::json!({ "format": "pt" }));
    // F32 tensors through numpy: dtype, shape and values.
    for w in &base {
        let g = &b["numpy"][&w.name];
        assert_eq!(g["dtype"], "float32", "{g}");
        assert_eq!(g["shape"], serde_json::json!(w.shape), "{g}");
        let want: f64 = w.values.iter().map(|&x| x as f64).sum();
        let got = g["sum"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-6 * (1.0 + want.abs()), "{}: numpy sum {got} != {want}", w.name);
    }
}

#[test]
fn checked_out_file_with_every_dtype_loads_in_python_safetensors() {
    let r = TestRepo::init();
    let ts = crate::test_roundtrip::all_dtypes(3);
    let bytes = st::hand_written(&ts, &crate::test_roundtrip::odd_layout(ts.len()));
    r.write("all.safetensors", &bytes);
    let c = r.add_commit(&["all.safetensors"], "all dtypes");
    r.ok(&["rm", "all.safetensors"]);
    r.commit("gone");
    r.ok(&["checkout", &c]);
    let p = r.path("all.safetensors");
    let Some(v) = python_inspect(&[&p]) else { return };
    let report = &v[p.to_str().unwrap()];
    check_against(report, &ts);
    assert_eq!(report["metadata"]["note"], "hand written \u{e9}");
    let i8s = &report["numpy"]["i8"];
    assert_eq!(i8s["dtype"], "int8");
    assert_eq!(i8s["shape"], serde_json::json!([5, 5]));
}
