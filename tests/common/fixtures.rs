//! Checkpoint folders used by several tests: a small F32 base model and a BF16 fine-tune of it.

use std::path::Path;

use super::st::{self, T, Weights};

/// Width of the fixture model.
pub const HIDDEN: u64 = 64;
/// Labels of the fine-tune's classifier head.
pub const LABELS: u64 = 3;

/// `config.json` of the base.
pub const BASE_CONFIG: &str = r#"{
  "architectures": ["TinyModel"],
  "hidden_size": 64,
  "num_hidden_layers": 2,
  "torch_dtype": "float32",
  "vocab_size": 256
}
"#;

/// `config.json` of the fine-tune.
pub const FT_CONFIG: &str = r#"{
  "architectures": ["TinyModelForSequenceClassification"],
  "hidden_size": 64,
  "num_hidden_layers": 2,
  "num_labels": 3,
  "torch_dtype": "bfloat16",
  "vocab_size": 256
}
"#;

/// `tokenizer.json` of both.
pub fn tokenizer_json() -> String {
    let vocab: Vec<String> = (0..256).map(|i| format!("\"tok{i}\": {i}")).collect();
    format!("{{\"version\": \"1.0\", \"model\": {{\"type\": \"WordLevel\", \"vocab\": {{{}}}}}}}\n", vocab.join(", "))
}

/// The base model's weights (about 330 KB as F32).
pub fn base_weights() -> Vec<Weights> {
    st::base_model(1, HIDDEN, 2, 256)
}

/// The fine-tune's weights: the base nudged on 30% of elements, plus a classifier head.
pub fn finetune_weights(base: &[Weights]) -> Vec<Weights> {
    let mut w = st::fine_tune(base, 2, 0.3);
    let mut rng = st::Rng::new(3);
    w.push(Weights {
        name: "classifier.weight".into(),
        shape: vec![LABELS, HIDDEN],
        values: (0..LABELS * HIDDEN).map(|_| rng.normal(0.02)).collect(),
    });
    w.push(Weights { name: "classifier.bias".into(), shape: vec![LABELS], values: vec![0.0; LABELS as usize] });
    w
}

/// Writes the base checkpoint (F32 `model.safetensors`, `config.json`, `tokenizer.json`).
pub fn write_base(dir: &Path) -> Vec<Weights> {
    let w = base_weights();
    let tensors: Vec<T> = w.iter().map(Weights::to_f32).collect();
    st::write(&dir.join("model.safetensors"), &tensors, Some(&[("format", "pt")]));
    std::fs::write(dir.join("config.json"), BASE_CONFIG).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    w
}

/// Writes the fine-tune checkpoint (BF16 `model.safetensors` with a classifier head).
pub fn write_finetune(dir: &Path, base: &[Weights]) -> Vec<Weights> {
    let w = finetune_weights(base);
    let tensors: Vec<T> = w.iter().map(Weights::to_bf16).collect();
    st::write(&dir.join("model.safetensors"), &tensors, Some(&[("format", "pt")]));
    std::fs::write(dir.join("config.json"), FT_CONFIG).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    w
}

/// A repository with the base committed and tagged `v1`, then the fine-tune committed on top
/// and tagged `v2` (annotated). Returns the two original folders (in the repo's scratch space).
pub fn family_repo() -> (super::TestRepo, std::path::PathBuf, std::path::PathBuf) {
    let r = super::TestRepo::init();
    let base = r.scratch("orig-base");
    let ft = r.scratch("orig-ft");
    let w = write_base(&base);
    write_finetune(&ft, &w);
    r.copy_in(&base);
    r.add_commit(&["."], "base model");
    r.ok(&["tag", "v1"]);
    r.clear_worktree();
    r.copy_in(&ft);
    r.add_commit(&["."], "fine-tune");
    r.ok(&["tag", "-m", "fine-tuned release", "v2"]);
    (r, base, ft)
}
