//! Synthetic model families for `mlv demo` and for benchmarks.
//!
//! [`write_family`] writes a BERT-like base checkpoint in FP32 plus a chain of
//! BF16 fine-tunes (`ft-2` is tuned from `ft-1`, and so on) as Hugging Face
//! style folders, without any input data. The numbers imitate what real
//! fine-tuning does to weights, because mlv's delta codecs are tuned on exactly
//! that: AdamW moves each trained weight by a few learning rates, so a
//! fine-tune differs from its base mostly in the low mantissa bits.
//!
//! Every element is a pure function of `(seed, tensor name, element index,
//! fine-tune number)` through a counter-based hash. Output is therefore
//! reproducible and independent of chunking, and any member of the chain can
//! be computed chunk by chunk without materialising its predecessors. All
//! members are written in one streaming pass with bounded buffers, so memory
//! stays flat from a 20 MB demo to a multi-GB benchmark.

use rayon::prelude::*;
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Default largest safetensors shard, like `save_pretrained`'s `max_shard_size`.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 1 << 30;

/// Seed used by [`FamilySpec::with_base_size`]; any value works.
const DEFAULT_SEED: u64 = 0x6d6c_765f_6465_6d6f;
/// BERT's fixed position table; `position_ids` is `[1, MAX_POSITIONS]`.
const MAX_POSITIONS: usize = 512;
/// Fine-tunes use shorter sequences, so later position rows get no gradient.
const TRAINED_POSITIONS: usize = 128;
/// Segment embeddings, as in BERT.
const TYPE_VOCAB: usize = 2;
/// Labels of the classification head every fine-tune adds.
const LABELS: [&str; 3] = ["negative", "neutral", "positive"];
/// BERT's WordPiece vocabulary size, used when sizing a model.
const BERT_VOCAB: usize = 30522;
/// Room for the special tokens plus a few words.
const MIN_VOCAB: usize = 128;
/// Upper end of the width search in [`FamilySpec::with_base_size`].
const MAX_HIDDEN: usize = 8192;
/// Bytes one chunk may occupy across all members (flat-memory budget).
const CHUNK_BUDGET_BYTES: usize = 2 << 20;
/// Per-file write buffer.
const WRITE_BUF_BYTES: usize = 1 << 20;
/// Learning rate of `ft-1`; each later link of the chain uses less.
const BASE_LR: f32 = 4e-5;
/// Decoupled AdamW weight decay, HF Trainer style.
const WEIGHT_DECAY: f32 = 0.01;
/// A freshly initialised head moves much more than pretrained weights.
const HEAD_LR_MULT: f32 = 5.0;
/// Fraction of vocabulary rows that a fine-tuning corpus actually touches.
const WORD_ROWS_SEEN: f64 = 0.35;
/// splitmix64's increment (2^64 / golden ratio).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
/// 2^-24, turns 24 random bits into a float in [0, 1).
const INV_2_24: f32 = 1.0 / 16_777_216.0;
/// 2^-31, turns 32 random bits into a float in [0, 2).
const INV_2_31: f32 = 1.0 / 2_147_483_648.0;

/// How big the family is and how many fine-tunes it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilySpec {
    /// Model width.
    pub hidden: usize,
    /// Number of transformer layers.
    pub layers: usize,
    /// Rows of the word embedding table.
    pub vocab: usize,
    /// MLP inner width.
    pub intermediate: usize,
    /// Length of the fine-tune chain (`ft-1` .. `ft-N`).
    pub finetunes: usize,
    /// Seed of every random value in the family.
    pub seed: u64,
    /// A member is split into shards when its weights would exceed this.
    pub max_shard_bytes: u64,
    /// Also save `ft-1` in FP32 (`ft-1-f32`), as trainers save by default: its rows that
    /// got no gradient only decayed, which BF16 saves round away.
    pub fp32_save: bool,
}

impl FamilySpec {
    /// A spec whose base model's FP32 safetensors file is about `bytes` large.
    pub fn with_base_size(bytes: u64, finetunes: usize) -> Self {
        let sized = |hidden: usize, vocab: usize| FamilySpec {
            hidden,
            layers: layers_for(hidden),
            vocab,
            intermediate: 4 * hidden,
            finetunes,
            seed: DEFAULT_SEED,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            fp32_save: finetunes > 0,
        };
        // Widest BERT-shaped model with a standard vocabulary that still fits;
        // size grows monotonically with width, so stop at the first miss.
        let mut hidden = 32;
        for h in (32..=MAX_HIDDEN).step_by(32) {
            if base_data_bytes(&sized(h, BERT_VOCAB)) > bytes {
                break;
            }
            hidden = h;
        }
        // The vocabulary absorbs the remainder (real vocabularies are odd
        // sizes anyway), which makes the total close to the target.
        let fixed = base_data_bytes(&sized(hidden, 0));
        let vocab =
            usize::try_from(bytes.saturating_sub(fixed) / (4 * hidden as u64)).unwrap_or(usize::MAX).max(MIN_VOCAB);
        sized(hidden, vocab)
    }

    fn validate(&self) -> Result<(), SynthError> {
        let bad = |what: &str| Err(SynthError::Spec(what.to_string()));
        if self.hidden == 0 || self.intermediate == 0 {
            return bad("hidden and intermediate must be positive");
        }
        if self.vocab < 5 {
            return bad("vocab must hold at least the 5 special tokens");
        }
        if self.max_shard_bytes == 0 {
            return bad("max_shard_bytes must be positive");
        }
        Ok(())
    }
}

/// What was written: member folders (base, ft-1, ...) and total bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// Folders in order base, ft-1, ft-2, ..., then `ft-1-f32` if asked for.
    pub dirs: Vec<PathBuf>,
    /// Per folder, the member to store it against when that is not the one before it
    /// (`ft-1-f32` is a save of `ft-1`, a fine-tune of `base`).
    pub bases: Vec<Option<String>>,
    /// Total size of all files written.
    pub bytes: u64,
}

/// Why a family could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A file or directory could not be created, written, renamed or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The spec describes no valid model.
    #[error("invalid family spec: {0}")]
    Spec(String),
    /// A JSON side file could not be serialized.
    #[error("serializing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes `out/base`, `out/ft-1`, ... `out/ft-N` and, with `fp32_save`, `out/ft-1-f32`.
pub fn write_family(spec: &FamilySpec, out: &Path) -> Result<Family, SynthError> {
    spec.validate()?;
    let defs = tensor_defs(spec);
    let mut members: Vec<Member> = (0..=spec.finetunes).map(Member::Saved).collect();
    if spec.fp32_save {
        members.push(Member::Fp32(1));
    }
    let plans: Vec<MemberPlan> = members.into_iter().map(|m| plan_member(&defs, spec, out, m)).collect();
    let mut outs = Vec::with_capacity(plans.len());
    for plan in &plans {
        fs::create_dir_all(&plan.dir).map_err(at(&plan.dir))?;
        outs.push(open_shards(plan)?);
    }
    let float_plans: Vec<Option<FloatPlan>> = defs.iter().map(|d| float_plan(d, spec)).collect();
    if let Err(e) = stream_tensors(&defs, &float_plans, &plans, &mut outs, spec) {
        // Best effort: the original error matters more than a leftover `.tmp`.
        for shard in outs.iter().flatten() {
            let _ = fs::remove_file(&shard.tmp);
        }
        return Err(e);
    }
    let mut bytes = 0;
    for (plan, shards) in plans.iter().zip(outs) {
        bytes += finish_member(spec, plan, shards)?;
    }
    let bases = plans.iter().map(|p| matches!(p.member, Member::Fp32(_)).then(|| Member::Saved(0).name())).collect();
    let dirs = plans.into_iter().map(|p| p.dir).collect();
    Ok(Family { dirs, bases, bytes })
}

// ---------------------------------------------------------------------------
// Model shape
// ---------------------------------------------------------------------------

/// Element types, in safetensors' `Dtype` order (which is what it sorts by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dtype {
    Bf16,
    F32,
    I64,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::Bf16 => "BF16",
            Dtype::F32 => "F32",
            Dtype::I64 => "I64",
        }
    }

    fn size(self) -> u64 {
        match self {
            Dtype::Bf16 => 2,
            Dtype::F32 => 4,
            Dtype::I64 => 8,
        }
    }
}

/// What a tensor is, which decides its initial statistics and how training moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    PositionIds,
    WordEmb,
    PosEmb,
    TypeEmb,
    Norm,
    NormBias,
    Matrix,
    Bias,
    HeadWeight,
    HeadBias,
}

/// One tensor of the architecture.
#[derive(Debug, Clone)]
struct TensorDef {
    name: String,
    shape: Vec<usize>,
    role: Role,
    /// Encoder layer, used for depth-dependent learning rates and freezing.
    layer: Option<usize>,
    /// False for the classifier head that only fine-tunes have.
    in_base: bool,
}

impl TensorDef {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn dtype(&self, float: Dtype) -> Dtype {
        if self.role == Role::PositionIds { Dtype::I64 } else { float }
    }

    fn bytes(&self, float: Dtype) -> u64 {
        self.numel() as u64 * self.dtype(float).size()
    }
}

/// BERT-like depth for a width: bert-tiny (128, 2) .. bert-base (768, 12).
fn layers_for(hidden: usize) -> usize {
    (hidden / 64).clamp(2, 48)
}

/// Attention heads of 64 (or 32) dims when the width allows it.
fn heads_for(hidden: usize) -> usize {
    if hidden.is_multiple_of(64) {
        hidden / 64
    } else if hidden.is_multiple_of(32) {
        hidden / 32
    } else {
        1
    }
}

/// Bytes of tensor data in the base (FP32) checkpoint.
fn base_data_bytes(spec: &FamilySpec) -> u64 {
    tensor_defs(spec).iter().filter(|d| d.in_base).map(|d| d.bytes(Dtype::F32)).sum()
}

/// The architecture in module order (the order HF uses to assign shards).
fn tensor_defs(spec: &FamilySpec) -> Vec<TensorDef> {
    let (h, m) = (spec.hidden, spec.intermediate);
    let mut defs = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, role: Role, layer: Option<usize>| {
        let in_base = !matches!(role, Role::HeadWeight | Role::HeadBias);
        defs.push(TensorDef { name, shape, role, layer, in_base });
    };
    let e = "embeddings.";
    push(format!("{e}word_embeddings.weight"), vec![spec.vocab, h], Role::WordEmb, None);
    push(format!("{e}position_embeddings.weight"), vec![MAX_POSITIONS, h], Role::PosEmb, None);
    push(format!("{e}token_type_embeddings.weight"), vec![TYPE_VOCAB, h], Role::TypeEmb, None);
    push(format!("{e}LayerNorm.weight"), vec![h], Role::Norm, None);
    push(format!("{e}LayerNorm.bias"), vec![h], Role::NormBias, None);
    push(format!("{e}position_ids"), vec![1, MAX_POSITIONS], Role::PositionIds, None);
    for l in 0..spec.layers {
        let p = format!("encoder.layer.{l}.");
        let linears = [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", m, h),
            ("output.dense", h, m),
        ];
        for (module, rows, cols) in linears {
            push(format!("{p}{module}.weight"), vec![rows, cols], Role::Matrix, Some(l));
            push(format!("{p}{module}.bias"), vec![rows], Role::Bias, Some(l));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            push(format!("{p}{norm}.weight"), vec![h], Role::Norm, Some(l));
            push(format!("{p}{norm}.bias"), vec![h], Role::NormBias, Some(l));
        }
    }
    push("pooler.dense.weight".into(), vec![h, h], Role::Matrix, None);
    push("pooler.dense.bias".into(), vec![h], Role::Bias, None);
    push("classifier.weight".into(), vec![LABELS.len(), h], Role::HeadWeight, None);
    push("classifier.bias".into(), vec![LABELS.len()], Role::HeadBias, None);
    defs
}

// ---------------------------------------------------------------------------
// File layout
// ---------------------------------------------------------------------------

/// One output safetensors file.
#[derive(Debug)]
struct ShardPlan {
    file_name: String,
    /// Tensor names in file order.
    names: Vec<String>,
    data_bytes: u64,
    /// JSON header, already padded; the file is `len | header | data`.
    header: Vec<u8>,
}

/// A member of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    /// The FP32 base (0) or the BF16 save of `ft-k`.
    Saved(usize),
    /// The FP32 save of `ft-k`.
    Fp32(usize),
}

impl Member {
    fn name(self) -> String {
        match self {
            Member::Saved(0) => "base".into(),
            Member::Saved(k) => format!("ft-{k}"),
            Member::Fp32(k) => format!("ft-{k}-f32"),
        }
    }

    /// How many fine-tunes it is from the base.
    fn k(self) -> usize {
        match self {
            Member::Saved(k) | Member::Fp32(k) => k,
        }
    }

    fn float(self) -> Dtype {
        match self {
            Member::Saved(0) | Member::Fp32(_) => Dtype::F32,
            Member::Saved(_) => Dtype::Bf16,
        }
    }
}

/// Layout of one family member.
#[derive(Debug)]
struct MemberPlan {
    member: Member,
    dir: PathBuf,
    shards: Vec<ShardPlan>,
    /// Which shard holds each tensor (`None`: not in this member).
    shard_of: Vec<Option<usize>>,
}

/// safetensors' file order: larger dtype first, then name.
fn file_order(a: (Dtype, &str), b: (Dtype, &str)) -> Ordering {
    b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
}

/// Global tensor order. Every member's files list their tensors in this
/// order too (I64 first, then floats by name), so a single pass can append
/// to all open files.
fn write_order(defs: &[TensorDef]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..defs.len()).collect();
    let key = |i: usize| (defs[i].dtype(Dtype::F32), defs[i].name.as_str());
    order.sort_by(|&a, &b| file_order(key(a), key(b)));
    order
}

fn plan_member(defs: &[TensorDef], spec: &FamilySpec, out: &Path, member: Member) -> MemberPlan {
    let float = member.float();
    let present = defs.iter().enumerate().filter(|(_, d)| member.k() > 0 || d.in_base);
    // Greedy split in module order, as huggingface_hub does.
    let mut groups: Vec<(Vec<usize>, u64)> = Vec::new();
    for (i, d) in present {
        let size = d.bytes(float);
        match groups.last_mut() {
            Some((g, total)) if *total + size <= spec.max_shard_bytes => {
                g.push(i);
                *total += size;
            }
            _ => groups.push((vec![i], size)),
        }
    }
    let count = groups.len();
    let mut shard_of = vec![None; defs.len()];
    let mut shards = Vec::with_capacity(count);
    for (s, (mut tensors, data_bytes)) in groups.into_iter().enumerate() {
        tensors
            .sort_by(|&a, &b| file_order((defs[a].dtype(float), &defs[a].name), (defs[b].dtype(float), &defs[b].name)));
        for &t in &tensors {
            shard_of[t] = Some(s);
        }
        let file_name = if count == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", s + 1)
        };
        let header = safetensors_header(defs, &tensors, float);
        let names = tensors.iter().map(|&t| defs[t].name.clone()).collect();
        shards.push(ShardPlan { file_name, names, data_bytes, header });
    }
    let dir = out.join(member.name());
    MemberPlan { member, dir, shards, shard_of }
}

/// Header exactly as the `safetensors` library serializes it: compact JSON,
/// `__metadata__` first, fields in `dtype, shape, data_offsets` order,
/// space-padded to a multiple of 8 bytes. Names need no JSON escaping: they
/// are built from ASCII letters, digits, dots and underscores only.
fn safetensors_header(defs: &[TensorDef], tensors: &[usize], float: Dtype) -> Vec<u8> {
    let mut json = String::from(r#"{"__metadata__":{"format":"pt"}"#);
    let mut offset = 0;
    for &t in tensors {
        let d = &defs[t];
        let end = offset + d.bytes(float);
        let shape: Vec<String> = d.shape.iter().map(ToString::to_string).collect();
        json.push_str(&format!(
            r#","{}":{{"dtype":"{}","shape":[{}],"data_offsets":[{offset},{end}]}}"#,
            d.name,
            d.dtype(float).name(),
            shape.join(",")
        ));
        offset = end;
    }
    json.push('}');
    let mut header = json.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    header
}

// ---------------------------------------------------------------------------
// Output files
// ---------------------------------------------------------------------------

/// Builds the error mapper for an I/O operation on `path`.
fn at(path: &Path) -> impl FnOnce(io::Error) -> SynthError + '_ {
    move |source| SynthError::Io { path: path.to_path_buf(), source }
}

/// Final name plus `.tmp`: the final name only ever holds complete files.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// A shard being streamed to its temporary name.
struct ShardOut {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    written: u64,
    expected: u64,
}

impl ShardOut {
    fn create(path: PathBuf, shard: &ShardPlan) -> Result<Self, SynthError> {
        let tmp = tmp_path(&path);
        let file = File::create(&tmp).map_err(at(&tmp))?;
        let expected = 8 + shard.header.len() as u64 + shard.data_bytes;
        let mut out =
            ShardOut { path, tmp, out: BufWriter::with_capacity(WRITE_BUF_BYTES, file), written: 0, expected };
        out.write(&(shard.header.len() as u64).to_le_bytes())?;
        out.write(&shard.header)?;
        Ok(out)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SynthError> {
        self.out.write_all(bytes).map_err(at(&self.tmp))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and moves the file to its final name; returns its size.
    fn finish(self) -> Result<u64, SynthError> {
        // A mismatch would mean the layout and the writer disagree: a bug.
        debug_assert_eq!(self.written, self.expected, "{}", self.path.display());
        // No fsync: the data is regenerable, and rename already guarantees a
        // crashed process never leaves a truncated file under the final name.
        let file =
            self.out.into_inner().map_err(|e| SynthError::Io { path: self.tmp.clone(), source: e.into_error() })?;
        // Close before renaming, which some platforms require.
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(at(&self.path))?;
        Ok(self.written)
    }
}

fn open_shards(plan: &MemberPlan) -> Result<Vec<ShardOut>, SynthError> {
    plan.shards.iter().map(|s| ShardOut::create(plan.dir.join(&s.file_name), s)).collect()
}

/// Writes a small file through `.tmp` + rename; returns its size.
fn write_atomic<F>(path: &Path, fill: F) -> Result<u64, SynthError>
where
    F: FnOnce(&mut BufWriter<File>) -> io::Result<()>,
{
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(at(&tmp))?;
    let mut out = BufWriter::new(file);
    fill(&mut out).and_then(|()| out.flush()).map_err(at(&tmp))?;
    drop(out);
    let size = fs::metadata(&tmp).map_err(at(&tmp))?.len();
    fs::rename(&tmp, path).map_err(at(path))?;
    Ok(size)
}

/// Writes JSON the way `transformers` does: `indent=2, sort_keys=True` + newline.
fn write_json(path: &Path, value: &Value) -> Result<u64, SynthError> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, |w| w.write_all(text.as_bytes()))
}

/// Renames the shards and writes the side files; returns the member's bytes.
fn finish_member(spec: &FamilySpec, plan: &MemberPlan, shards: Vec<ShardOut>) -> Result<u64, SynthError> {
    let mut bytes = 0;
    for shard in shards {
        bytes += shard.finish()?;
    }
    let mut fresh: Vec<String> = plan.shards.iter().map(|s| s.file_name.clone()).collect();
    if plan.shards.len() > 1 {
        let index = shard_index(plan);
        let name = "model.safetensors.index.json";
        bytes += write_json(&plan.dir.join(name), &index)?;
        fresh.push(name.into());
    }
    bytes += write_json(&plan.dir.join("config.json"), &config_json(spec, plan.member))?;
    bytes += write_json(&plan.dir.join("tokenizer_config.json"), &tokenizer_config())?;
    bytes += write_atomic(&plan.dir.join("vocab.txt"), |w| write_vocab(w, spec.vocab))?;
    remove_stale_weights(&plan.dir, &fresh)?;
    Ok(bytes)
}

/// `model.safetensors.index.json` in the Hugging Face format.
fn shard_index(plan: &MemberPlan) -> Value {
    let total: u64 = plan.shards.iter().map(|s| s.data_bytes).sum();
    let weight_map: serde_json::Map<String, Value> =
        plan.shards.iter().flat_map(|s| s.names.iter().map(|n| (n.clone(), json!(s.file_name)))).collect();
    json!({ "metadata": { "total_size": total }, "weight_map": weight_map })
}

/// Deletes weight files of an earlier, differently sharded run.
fn remove_stale_weights(dir: &Path, fresh: &[String]) -> Result<(), SynthError> {
    for entry in fs::read_dir(dir).map_err(at(dir))? {
        let path = entry.map_err(at(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let base = name.strip_suffix(".tmp").unwrap_or(name);
        let ours =
            base.starts_with("model") && (base.ends_with(".safetensors") || base.ends_with(".safetensors.index.json"));
        if ours && !fresh.iter().any(|f| f == name) {
            fs::remove_file(&path).map_err(at(&path))?;
        }
    }
    Ok(())
}

/// A BERT `config.json`; fine-tunes become sequence classifiers in BF16.
fn config_json(spec: &FamilySpec, member: Member) -> Value {
    let k = member.k();
    let mut config = json!({
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": null,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": spec.hidden,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": MAX_POSITIONS,
        "model_type": "bert",
        "num_attention_heads": heads_for(spec.hidden),
        "num_hidden_layers": spec.layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": "4.44.2",
        "type_vocab_size": TYPE_VOCAB,
        "use_cache": true,
        "vocab_size": spec.vocab,
    });
    if k > 0 {
        let id2label: serde_json::Map<String, Value> =
            LABELS.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
        let label2id: serde_json::Map<String, Value> =
            LABELS.iter().enumerate().map(|(i, l)| (l.to_string(), json!(i))).collect();
        let extra = json!({
            "_name_or_path": format!("../{}", Member::Saved(k - 1).name()),
            "architectures": ["BertForSequenceClassification"],
            "id2label": id2label,
            "label2id": label2id,
            "problem_type": "single_label_classification",
            "torch_dtype": if member.float() == Dtype::F32 { "float32" } else { "bfloat16" },
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut config, extra) {
            c.extend(e);
        }
    }
    config
}

fn tokenizer_config() -> Value {
    json!({
        "clean_up_tokenization_spaces": true,
        "cls_token": "[CLS]",
        "do_lower_case": true,
        "mask_token": "[MASK]",
        "model_max_length": MAX_POSITIONS,
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "strip_accents": null,
        "tokenize_chinese_chars": true,
        "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
    })
}

/// One token per embedding row: specials, then unique pseudo-words.
fn write_vocab(w: &mut impl Write, vocab: usize) -> io::Result<()> {
    const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    for special in SPECIALS.iter().take(vocab) {
        writeln!(w, "{special}")?;
    }
    for i in SPECIALS.len()..vocab {
        // Every 4th piece is a WordPiece continuation, like real BERT vocabularies.
        let prefix = if i % 4 == 0 { "##" } else { "" };
        writeln!(w, "{prefix}{}", pseudo_word(i - SPECIALS.len()))?;
    }
    Ok(())
}

/// Bijective base-16 over syllables, so every `n` gives a distinct word.
fn pseudo_word(mut n: usize) -> String {
    const SYLLABLES: [&str; 16] =
        ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "bo", "da", "fe", "gu", "hi", "ja", "pe"];
    let mut word = String::new();
    loop {
        word.push_str(SYLLABLES[n % 16]);
        n /= 16;
        if n == 0 {
            return word;
        }
        n -= 1;
    }
}

// ---------------------------------------------------------------------------
// Random numbers
// ---------------------------------------------------------------------------

/// splitmix64's finalizer: a strong 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Counter-based draw `i` of `stream`: no state, so any chunk can start anywhere.
fn draw(stream: u64, i: u64) -> u64 {
    mix64(stream.wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN)))
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Independent stream for `(tensor, purpose, fine-tune k)`.
fn stream(tensor_key: u64, purpose: u64, k: u64) -> u64 {
    mix64(tensor_key ^ mix64(purpose.wrapping_mul(GOLDEN) ^ k.wrapping_add(1)))
}

/// Uniform in [0, 1) from the low 24 bits.
fn unit24(bits: u64) -> f32 {
    (bits & 0xff_ffff) as f32 * INV_2_24
}

/// Marsaglia's polar method: the two standard normals of pair `p`.
/// Rejected points are redrawn from derived streams, so the result still
/// depends only on `(stream, p)`; it avoids Box-Muller's sin and cos.
fn normal_pair(stream: u64, p: u64) -> (f32, f32) {
    let mut attempt = stream;
    loop {
        let bits = draw(attempt, p);
        let u = signed_unit(bits);
        let v = signed_unit(bits >> 32);
        let s = u * u + v * v;
        if s < 1.0 && s > 0.0 {
            let f = (-2.0 * s.ln() / s).sqrt();
            return (u * f, v * f);
        }
        attempt = mix64(attempt ^ PURPOSE_RETRY);
    }
}

/// Uniform in [-1, 1) from the low 32 bits.
fn signed_unit(bits: u64) -> f32 {
    (bits & 0xffff_ffff) as u32 as f32 * INV_2_31 - 1.0
}

/// Adam-like normalised update in [-1, 1]: random sign, magnitude x*y
/// (mostly small, with a tail up to the bound, as clipped Adam steps are).
fn adam_noise(bits: u64) -> f32 {
    let magnitude = unit24(bits) * unit24(bits >> 24);
    let sign = ((bits >> 63) as u32) << 31;
    f32::from_bits(magnitude.to_bits() | sign)
}

/// IEEE f32 -> bfloat16, round to nearest even, like PyTorch.
fn f32_to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let bits = x.to_bits();
    // Cannot overflow: the largest non-NaN pattern is 0xff80_0000.
    let rounded = bits + 0x7fff + ((bits >> 16) & 1);
    (rounded >> 16) as u16
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

/// Stream purposes.
const PURPOSE_INIT: u64 = 1;
const PURPOSE_STEP: u64 = 2;
const PURPOSE_ROWS: u64 = 3;
const PURPOSE_JITTER: u64 = 4;
const PURPOSE_RETRY: u64 = 5;

/// Initial (base / fresh head) values: `mean + std * N(0, 1)`.
#[derive(Debug, Clone, Copy)]
struct Init {
    stream: u64,
    mean: f32,
    std: f32,
}

/// Which rows of a matrix receive gradient in a fine-tune.
#[derive(Debug, Clone, Copy)]
enum Rows {
    All,
    /// Only rows below this index (positions beyond the sequence length).
    Prefix(usize),
    /// Rows whose hash is below this threshold (tokens seen in the corpus).
    Sampled(u64),
}

/// One AdamW fine-tune applied to one tensor.
#[derive(Debug, Clone, Copy)]
struct Update {
    frozen: bool,
    stream: u64,
    row_stream: u64,
    /// Accumulated decoupled weight decay, `1 - lr * wd * steps`.
    decay: f32,
    /// Largest total movement of a trained weight.
    amp: f32,
    rows: Rows,
    cols: usize,
}

/// Everything needed to compute any chunk of a float tensor in any member.
#[derive(Debug, Clone)]
struct FloatPlan {
    init: Init,
    /// Update k-1 turns member k-1's master weights into member k's.
    updates: Vec<Update>,
}

fn float_plan(def: &TensorDef, spec: &FamilySpec) -> Option<FloatPlan> {
    if def.role == Role::PositionIds {
        return None;
    }
    let key = mix64(spec.seed ^ fnv1a(&def.name));
    // Per-tensor spread, as trained layers differ in scale.
    let jitter = 0.8 + 0.4 * unit24(mix64(key ^ PURPOSE_JITTER));
    let (mean, std) = match def.role {
        Role::Norm => (0.9 + 0.1 * jitter, 0.05 * jitter),
        Role::NormBias | Role::Bias => (0.0, 0.01 * jitter),
        Role::HeadBias => (0.0, 0.0),
        _ => (0.0, 0.02 * jitter),
    };
    let init = Init { stream: stream(key, PURPOSE_INIT, 0), mean, std };
    let updates = (1..=spec.finetunes).map(|k| update_for(def, spec, key, k)).collect();
    Some(FloatPlan { init, updates })
}

/// Learning rate and step count of fine-tune `k`: each link of the chain is
/// a gentler re-tune of the previous one.
fn schedule(k: usize) -> (f32, f32) {
    let exponent = i32::try_from(k.saturating_sub(1).min(30)).unwrap_or(30);
    let lr = BASE_LR * 0.6f32.powi(exponent);
    let steps = 300.0 + 100.0 * ((k - 1) % 3) as f32;
    (lr, steps)
}

fn update_for(def: &TensorDef, spec: &FamilySpec, key: u64, k: usize) -> Update {
    let (lr, steps) = schedule(k);
    let embedding = def.name.starts_with("embeddings.");
    // The pooler is unused by the synthetic task; later links of the chain
    // freeze the embeddings and the first layer, a common recipe.
    let frozen = def.name.starts_with("pooler.") || (k >= 2 && (embedding || def.layer == Some(0)));
    // HF Trainer exempts biases and LayerNorm weights from weight decay.
    let decays = matches!(def.role, Role::WordEmb | Role::PosEmb | Role::TypeEmb | Role::Matrix | Role::HeadWeight);
    // Upper layers move more than lower ones during fine-tuning.
    let depth = match def.layer {
        Some(l) => 0.5 + (l as f32 + 1.0) / spec.layers.max(1) as f32,
        None if embedding => 0.75,
        None => 1.0,
    };
    let head = if def.in_base { 1.0 } else { HEAD_LR_MULT };
    // Adam steps are ~lr each with mostly random signs, so they add up like
    // a random walk: about sqrt(steps) of them survive.
    let amp = lr * head * depth * 0.25 * steps.sqrt();
    let rows = match def.role {
        Role::WordEmb => Rows::Sampled((WORD_ROWS_SEEN * u64::MAX as f64) as u64),
        Role::PosEmb => Rows::Prefix(TRAINED_POSITIONS),
        Role::TypeEmb => Rows::Prefix(1),
        _ => Rows::All,
    };
    let k64 = k as u64;
    Update {
        frozen,
        stream: stream(key, PURPOSE_STEP, k64),
        row_stream: stream(key, PURPOSE_ROWS, k64),
        decay: if decays { 1.0 - lr * WEIGHT_DECAY * steps } else { 1.0 },
        amp,
        rows,
        cols: def.shape.last().copied().unwrap_or(1).max(1),
    }
}

/// Fills `out` with initial values of elements `start..`; `start` must be even
/// because normals come in pairs `(2p, 2p + 1)`.
fn fill_init(out: &mut [f32], init: &Init, start: usize) {
    debug_assert!(start.is_multiple_of(2));
    let first_pair = (start / 2) as u64;
    for (p, pair) in (first_pair..).zip(out.chunks_mut(2)) {
        let (a, b) = normal_pair(init.stream, p);
        pair[0] = init.mean + init.std * a;
        if let Some(second) = pair.get_mut(1) {
            *second = init.mean + init.std * b;
        }
    }
}

/// Applies one fine-tune to master weights of elements `start..`.
fn apply_update(master: &mut [f32], up: &Update, start: usize) {
    if up.frozen {
        return;
    }
    if matches!(up.rows, Rows::All) {
        train_span(master, up, start);
        return;
    }
    let mut i = 0;
    while i < master.len() {
        let row = (start + i) / up.cols;
        let end = ((row + 1) * up.cols - start).min(master.len());
        let span = &mut master[i..end];
        if row_trained(up, row) {
            train_span(span, up, start + i);
        } else {
            // No gradient ever: AdamW still decays the weight, nothing else.
            span.iter_mut().for_each(|w| *w *= up.decay);
        }
        i = end;
    }
}

fn row_trained(up: &Update, row: usize) -> bool {
    match up.rows {
        Rows::All => true,
        Rows::Prefix(n) => row < n,
        Rows::Sampled(threshold) => draw(up.row_stream, row as u64) < threshold,
    }
}

/// `w <- w * decay + amp * u` with `u` the element's Adam-like noise.
fn train_span(span: &mut [f32], up: &Update, start: usize) {
    for (i, w) in (start as u64..).zip(span.iter_mut()) {
        *w = *w * up.decay + up.amp * adam_noise(draw(up.stream, i));
    }
}

/// Encoded bytes of one chunk for every member that has the tensor.
struct ChunkOut {
    /// FP32 bytes for the base (empty for head tensors).
    base: Vec<u8>,
    /// BF16 bytes for ft-1, ft-2, ...
    fts: Vec<Vec<u8>>,
    /// FP32 bytes for ft-1-f32, when it is written.
    fp32: Vec<u8>,
}

impl ChunkOut {
    fn of(&self, member: Member) -> &[u8] {
        match member {
            Member::Saved(0) => &self.base,
            Member::Saved(k) => &self.fts[k - 1],
            Member::Fp32(_) => &self.fp32,
        }
    }
}

fn compute_chunk(plan: &FloatPlan, in_base: bool, fp32_save: bool, start: usize, len: usize) -> ChunkOut {
    let mut master = vec![0f32; len];
    fill_init(&mut master, &plan.init, start);
    let base = if in_base { f32_bytes(&master) } else { Vec::new() };
    let mut fp32 = Vec::new();
    let fts = plan
        .updates
        .iter()
        .enumerate()
        .map(|(k, up)| {
            // Master weights stay FP32 across the chain; the saved copy is BF16, and FP32 for
            // the first fine-tune when asked.
            apply_update(&mut master, up, start);
            if k == 0 && fp32_save {
                fp32 = f32_bytes(&master);
            }
            bf16_bytes(&master)
        })
        .collect();
    ChunkOut { base, fts, fp32 }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * 4];
    for (dst, v) in out.chunks_exact_mut(4).zip(values) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    out
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * 2];
    for (dst, v) in out.chunks_exact_mut(2).zip(values) {
        dst.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
    }
    out
}

/// Elements per chunk so that one chunk's buffers stay within the budget.
fn chunk_elems(spec: &FamilySpec) -> usize {
    // FP32 master + FP32 base bytes + one BF16 copy per fine-tune (+ one FP32 save).
    let per_elem = 8 + 2 * spec.finetunes + if spec.fp32_save { 4 } else { 0 };
    ((CHUNK_BUDGET_BYTES / per_elem) & !1).max(2048)
}

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

/// A piece of one tensor: elements `start..start + len`.
#[derive(Debug, Clone, Copy)]
struct Job {
    tensor: usize,
    start: usize,
    len: usize,
}

/// Every chunk of every tensor, in write order.
fn jobs(defs: &[TensorDef], chunk: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    for tensor in write_order(defs) {
        let numel = defs[tensor].numel();
        for start in (0..numel).step_by(chunk) {
            let len = chunk.min(numel - start);
            jobs.push(Job { tensor, start, len });
        }
    }
    jobs
}

/// Streams all tensors into all members. A batch of chunks is computed in
/// parallel while the previous batch is written, which keeps the cores busy
/// and bounds memory to two batches whatever the model size.
fn stream_tensors(
    defs: &[TensorDef],
    float_plans: &[Option<FloatPlan>],
    plans: &[MemberPlan],
    outs: &mut [Vec<ShardOut>],
    spec: &FamilySpec,
) -> Result<(), SynthError> {
    let jobs = jobs(defs, chunk_elems(spec));
    let per_batch = 2 * rayon::current_num_threads().max(1);
    let compute = |batch: &[Job]| -> Vec<ChunkOut> {
        batch
            .par_iter()
            .map(|job| match &float_plans[job.tensor] {
                Some(plan) => compute_chunk(plan, defs[job.tensor].in_base, spec.fp32_save, job.start, job.len),
                None => position_ids_chunk(spec.finetunes),
            })
            .collect()
    };
    let mut pending: (&[Job], Vec<ChunkOut>) = (&[], Vec::new());
    for batch in jobs.chunks(per_batch) {
        let (written, computed) = rayon::join(|| write_batch(pending.0, &pending.1, plans, outs), || compute(batch));
        written?;
        pending = (batch, computed);
    }
    write_batch(pending.0, &pending.1, plans, outs)
}

/// `embeddings.position_ids`: 0..511 as I64, identical in every member.
fn position_ids_chunk(finetunes: usize) -> ChunkOut {
    let bytes: Vec<u8> = (0..MAX_POSITIONS as i64).flat_map(i64::to_le_bytes).collect();
    ChunkOut { fts: vec![bytes.clone(); finetunes], fp32: bytes.clone(), base: bytes }
}

fn write_batch(
    jobs: &[Job],
    chunks: &[ChunkOut],
    plans: &[MemberPlan],
    outs: &mut [Vec<ShardOut>],
) -> Result<(), SynthError> {
    for (job, chunk) in jobs.iter().zip(chunks) {
        write_chunk(job.tensor, chunk, plans, outs)?;
    }
    Ok(())
}

fn write_chunk(
    idx: usize,
    chunk: &ChunkOut,
    plans: &[MemberPlan],
    outs: &mut [Vec<ShardOut>],
) -> Result<(), SynthError> {
    for (plan, shards) in plans.iter().zip(outs.iter_mut()) {
        let Some(s) = plan.shard_of[idx] else {
            continue;
        };
        shards[s].write(chunk.of(plan.member))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tiny(finetunes: usize) -> FamilySpec {
        FamilySpec {
            hidden: 32,
            layers: 2,
            vocab: 300,
            intermediate: 64,
            finetunes,
            seed: 7,
            max_shard_bytes: DEFAULT_MAX_SHARD_BYTES,
            fp32_save: false,
        }
    }

    #[derive(Debug, Clone)]
    struct Tensor {
        dtype: String,
        shape: Vec<usize>,
        data: Vec<u8>,
    }

    fn dtype_size(dtype: &str) -> usize {
        match dtype {
            "BF16" => 2,
            "F32" => 4,
            "I64" => 8,
            other => panic!("unexpected dtype {other}"),
        }
    }

    /// Parses a safetensors file by hand, checking the layout invariants.
    fn parse_file(path: &Path) -> Vec<(String, Tensor)> {
        let bytes = fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0, "header not padded");
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        assert!(header.starts_with(r#"{"__metadata__":{"format":"pt"},"#));
        let value: Value = serde_json::from_str(header.trim_end()).unwrap();
        let mut tensors: Vec<(usize, usize, String, Tensor)> = value
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.as_str() != "__metadata__")
            .map(|(name, info)| {
                let off = info["data_offsets"].as_array().unwrap();
                let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
                let dtype = info["dtype"].as_str().unwrap().to_string();
                let shape: Vec<usize> =
                    info["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                assert_eq!(b - a, shape.iter().product::<usize>() * dtype_size(&dtype), "{name}");
                let data = bytes[8 + n + a..8 + n + b].to_vec();
                (a, b, name.clone(), Tensor { dtype, shape, data })
            })
            .collect();
        tensors.sort_by_key(|t| t.0);
        let mut expect = 0;
        for (a, b, name, _) in &tensors {
            assert_eq!(*a, expect, "offsets of {name} not contiguous");
            expect = *b;
        }
        assert_eq!(8 + n + expect, bytes.len(), "trailing bytes");
        // Offsets order must be safetensors' own: dtype size desc, then name.
        let order: Vec<(usize, &str)> = tensors.iter().map(|t| (dtype_size(&t.3.dtype), t.2.as_str())).collect();
        let mut sorted = order.clone();
        sorted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        assert_eq!(order, sorted);
        // Header positions follow offsets order too.
        let positions: Vec<usize> = tensors.iter().map(|t| header.find(&format!("\"{}\":", t.2)).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        tensors.into_iter().map(|(_, _, name, t)| (name, t)).collect()
    }

    /// Loads all tensors of a member folder (sharded or not).
    fn load_dir(dir: &Path) -> HashMap<String, Tensor> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let v: Value = serde_json::from_slice(&fs::read(index).unwrap()).unwrap();
            let mut files: Vec<String> =
                v["weight_map"].as_object().unwrap().values().map(|f| f.as_str().unwrap().to_string()).collect();
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        files.iter().flat_map(|f| parse_file(f)).collect()
    }

    fn as_f32(t: &Tensor) -> Vec<f32> {
        assert_eq!(t.dtype, "F32");
        t.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    fn as_bf16(t: &Tensor) -> Vec<u16> {
        assert_eq!(t.dtype, "BF16");
        t.data.chunks_exact(2).map(|b| u16::from_le_bytes(b.try_into().unwrap())).collect()
    }

    #[test]
    fn files_parse_with_expected_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let spec = tiny(2);
        let family = write_family(&spec, dir.path()).unwrap();
        assert_eq!(family.dirs.len(), 3);
        assert!(family.dirs[0].ends_with("base") && family.dirs[2].ends_with("ft-2"));
        let base = load_dir(&family.dirs[0]);
        let ft = load_dir(&family.dirs[1]);
        let word = &base["embeddings.word_embeddings.weight"];
        assert_eq!((word.dtype.as_str(), word.shape.clone()), ("F32", vec![300, 32]));
        let ids = &base["embeddings.position_ids"];
        assert_eq!((ids.dtype.as_str(), ids.shape.clone()), ("I64", vec![1, 512]));
        let expect_ids: Vec<u8> = (0..512i64).flat_map(i64::to_le_bytes).collect();
        assert_eq!(ids.data, expect_ids);
        assert_eq!(ft["embeddings.position_ids"].data, expect_ids);
        assert_eq!(ft["encoder.layer.1.intermediate.dense.weight"].shape, vec![64, 32]);
        assert_eq!(ft["encoder.layer.1.output.dense.weight"].shape, vec![32, 64]);
        assert!(!base.contains_key("classifier.weight"));
        assert_eq!(ft["classifier.weight"].shape, vec![3, 32]);
        assert_eq!(ft.len(), base.len() + 2);
        for name in ["config.json", "tokenizer_config.json", "vocab.txt"] {
            assert!(family.dirs[1].join(name).exists(), "{name}");
        }
        let config: Value = serde_json::from_slice(&fs::read(family.dirs[1].join("config.json")).unwrap()).unwrap();
        assert_eq!(config["torch_dtype"], "bfloat16");
        assert_eq!(config["hidden_size"], 32);
        let vocab = fs::read_to_string(family.dirs[0].join("vocab.txt")).unwrap();
        assert_eq!(vocab.lines().count(), 300);
        let unique: std::collections::HashSet<&str> = vocab.lines().collect();
        assert_eq!(unique.len(), 300);
        let on_disk: u64 = family
            .dirs
            .iter()
            .flat_map(|d| fs::read_dir(d).unwrap())
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(family.bytes, on_disk);
    }

    #[test]
    fn finetunes_differ_in_low_mantissa_bits() {
        let dir = tempfile::tempdir().unwrap();
        let family = write_family(&tiny(2), dir.path()).unwrap();
        let base = load_dir(&family.dirs[0]);
        let ft1 = load_dir(&family.dirs[1]);
        let ft2 = load_dir(&family.dirs[2]);
        let name = "encoder.layer.1.attention.self.query.weight";
        let rounded: Vec<u16> = as_f32(&base[name]).into_iter().map(f32_to_bf16).collect();
        let tuned = as_bf16(&ft1[name]);
        let changed = rounded.iter().zip(&tuned).filter(|(a, b)| a != b).count();
        let same_exp = rounded.iter().zip(&tuned).filter(|(a, b)| (*a ^ *b) & 0xff80 == 0).count();
        let n = tuned.len() as f64;
        assert!(changed as f64 > 0.1 * n, "too few changed: {changed}");
        assert!(same_exp as f64 > 0.9 * n, "exponents moved: {same_exp}");
        // ft-2 continues from ft-1: closer to ft-1 than to the base.
        let tuned2 = as_bf16(&ft2[name]);
        let d1 = tuned.iter().zip(&tuned2).filter(|(a, b)| a != b).count();
        let d0 = rounded.iter().zip(&tuned2).filter(|(a, b)| a != b).count();
        assert!(d1 < d0, "ft-2 vs ft-1 {d1}, vs base {d0}");
        // The pooler is frozen: exactly the base rounded to BF16.
        let pooler = "pooler.dense.weight";
        let pooled: Vec<u16> = as_f32(&base[pooler]).into_iter().map(f32_to_bf16).collect();
        assert_eq!(as_bf16(&ft1[pooler]), pooled);
        // Frozen in the second link: ft-2's layer 0 equals ft-1's.
        let l0 = "encoder.layer.0.output.dense.weight";
        assert_eq!(ft1[l0].data, ft2[l0].data);
    }

    #[test]
    fn the_fp32_save_keeps_what_bf16_rounds_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = tiny(2);
        spec.fp32_save = true;
        let family = write_family(&spec, dir.path()).unwrap();
        assert_eq!(family.dirs.last().unwrap().file_name().unwrap(), "ft-1-f32");
        assert_eq!(family.bases, [None, None, None, Some("base".to_string())]);
        let base = load_dir(&family.dirs[0]);
        let ft1 = load_dir(&family.dirs[1]);
        let f32_save = load_dir(&family.dirs[3]);
        let name = "embeddings.word_embeddings.weight";
        let (b, f) = (as_f32(&base[name]), as_f32(&f32_save[name]));
        // ft-1 is the same weights rounded to BF16.
        let rounded: Vec<u16> = f.iter().copied().map(f32_to_bf16).collect();
        assert_eq!(as_bf16(&ft1[name]), rounded);
        // Rows without gradient only decayed: each weight is one FP32 multiply of the base's.
        let (lr, steps) = schedule(1);
        let decay = 1.0 - lr * WEIGHT_DECAY * steps;
        let decayed = b.iter().zip(&f).filter(|(b, f)| **b * decay == **f).count();
        let n = b.len() as f64;
        assert!((0.5..0.8).contains(&(decayed as f64 / n)), "{decayed} of {n} decayed only");
        assert!(b.iter().zip(&f).filter(|(b, f)| b != f).count() as f64 > 0.9 * n);
    }

    #[test]
    fn output_is_deterministic() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut spec = tiny(1);
        spec.max_shard_bytes = 40_000;
        let fa = write_family(&spec, a.path()).unwrap();
        let fb = write_family(&spec, b.path()).unwrap();
        assert_eq!(fa.bytes, fb.bytes);
        for (da, db) in fa.dirs.iter().zip(&fb.dirs) {
            let mut names: Vec<_> = fs::read_dir(da).unwrap().map(|e| e.unwrap().file_name()).collect();
            names.sort();
            for name in names {
                assert_eq!(fs::read(da.join(&name)).unwrap(), fs::read(db.join(&name)).unwrap());
            }
        }
        spec.seed += 1;
        let c = tempfile::tempdir().unwrap();
        let fc = write_family(&spec, c.path()).unwrap();
        let file = "model-00001-of-00004.safetensors";
        assert_ne!(fs::read(fa.dirs[0].join(file)).unwrap(), fs::read(fc.dirs[0].join(file)).unwrap());
    }

    #[test]
    fn values_do_not_depend_on_chunking() {
        let spec = tiny(3);
        let defs = tensor_defs(&spec);
        let def = defs.iter().find(|d| d.role == Role::WordEmb).unwrap();
        let plan = float_plan(def, &spec).unwrap();
        let whole = compute_chunk(&plan, true, true, 0, def.numel());
        let mut base: Vec<u8> = Vec::new();
        let mut ft3: Vec<u8> = Vec::new();
        let mut fp32: Vec<u8> = Vec::new();
        let mut start = 0;
        while start < def.numel() {
            let len = 46.min(def.numel() - start);
            let part = compute_chunk(&plan, true, true, start, len);
            base.extend(part.base);
            ft3.extend(&part.fts[2]);
            fp32.extend(part.fp32);
            start += len;
        }
        assert_eq!(whole.base, base);
        assert_eq!(whole.fts[2], ft3);
        assert_eq!(whole.fp32, fp32);
    }

    #[test]
    fn sharding_writes_valid_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = tiny(1);
        spec.max_shard_bytes = 40_000;
        // A previous unsharded run must not leave a stale model.safetensors.
        write_family(&tiny(1), dir.path()).unwrap();
        let family = write_family(&spec, dir.path()).unwrap();
        let base_dir = &family.dirs[0];
        assert!(!base_dir.join("model.safetensors").exists());
        let index: Value =
            serde_json::from_slice(&fs::read(base_dir.join("model.safetensors.index.json")).unwrap()).unwrap();
        let map = index["weight_map"].as_object().unwrap();
        let tensors = load_dir(base_dir);
        assert_eq!(map.len(), tensors.len());
        let total: usize = tensors.values().map(|t| t.data.len()).sum();
        assert_eq!(index["metadata"]["total_size"].as_u64().unwrap() as usize, total);
        let mut files: Vec<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
        files.sort();
        files.dedup();
        assert!(files.len() > 1);
        let n = files.len();
        for (i, file) in files.iter().enumerate() {
            assert_eq!(*file, format!("model-{:05}-of-{n:05}.safetensors", i + 1));
            let size = fs::metadata(base_dir.join(file)).unwrap().len();
            let in_file: Vec<(String, Tensor)> = parse_file(&base_dir.join(file));
            for (name, _) in &in_file {
                assert_eq!(map[name].as_str().unwrap(), *file);
            }
            let data: u64 = in_file.iter().map(|(_, t)| t.data.len() as u64).sum();
            // A shard only exceeds the limit when one tensor alone does.
            assert!(data <= spec.max_shard_bytes || in_file.len() == 1, "{file}: {size}");
        }
        let leftovers = fs::read_dir(base_dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn base_size_is_close_to_request() {
        for bytes in [200_000u64, 20_000_000, 2_000_000_000] {
            let spec = FamilySpec::with_base_size(bytes, 2);
            let got = base_data_bytes(&spec) as f64;
            assert!((got / bytes as f64 - 1.0).abs() < 0.05, "{bytes}: {got} {spec:?}");
            assert_eq!(spec.intermediate, 4 * spec.hidden);
        }
        let demo = FamilySpec::with_base_size(20_000_000, 2);
        assert_eq!((demo.hidden, demo.layers), (128, 2));
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // Exactly halfway: ties go to the even mantissa.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        assert_eq!(f32_to_bf16(f32::NAN), 0x7fc0);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0);
    }

    #[test]
    fn invalid_spec_is_rejected() {
        let mut spec = tiny(1);
        spec.hidden = 0;
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(write_family(&spec, dir.path()), Err(SynthError::Spec(_))));
    }
}
