//! Writing safetensors files for tests: canonical files through the `safetensors` crate, and
//! hand-laid files (odd header formatting, unusual order, gaps) byte by byte.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

/// A small deterministic generator (splitmix64): the same seed gives the same files.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_5eed_5eed_5eed)
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Roughly normal with mean 0 and standard deviation `std` (sum of uniforms).
    pub fn normal(&mut self, std: f32) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0;
        s * std * 1.732
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// One tensor: name, safetensors dtype name, shape and little-endian element bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct T {
    /// Name in the header.
    pub name: String,
    /// Dtype name as in headers (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Element bytes.
    pub data: Vec<u8>,
}

impl T {
    /// A tensor; panics if the bytes do not fit the shape (a bug in the test).
    pub fn new(name: &str, dtype: &str, shape: &[u64], data: Vec<u8>) -> T {
        let elems: u64 = shape.iter().product();
        let bits = elems * dtype_bits(dtype);
        assert_eq!(bits % 8, 0, "{name}: {elems} elements of {dtype} do not fill whole bytes");
        assert_eq!(data.len() as u64, bits / 8, "{name}: wrong byte length for {dtype} {shape:?}");
        T { name: name.into(), dtype: dtype.into(), shape: shape.to_vec(), data }
    }

    /// An F32 tensor.
    pub fn f32(name: &str, shape: &[u64], v: &[f32]) -> T {
        T::new(name, "F32", shape, f32_le(v))
    }

    /// A BF16 tensor (values rounded to nearest even).
    pub fn bf16(name: &str, shape: &[u64], v: &[f32]) -> T {
        T::new(name, "BF16", shape, bf16_le(v))
    }

    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Bits per element of a dtype name.
pub fn dtype_bits(dtype: &str) -> u64 {
    match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ" | "F8_E5M2FNUZ" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "F64" | "I64" | "U64" | "C64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        other => panic!("unknown dtype {other}"),
    }
}

/// The `safetensors` crate's dtype for a name.
pub fn dtype_of(name: &str) -> Dtype {
    match name {
        "BOOL" => Dtype::BOOL,
        "U8" => Dtype::U8,
        "I8" => Dtype::I8,
        "F8_E5M2" => Dtype::F8_E5M2,
        "F8_E4M3" => Dtype::F8_E4M3,
        "F8_E8M0" => Dtype::F8_E8M0,
        "F8_E4M3FNUZ" => Dtype::F8_E4M3FNUZ,
        "F8_E5M2FNUZ" => Dtype::F8_E5M2FNUZ,
        "I16" => Dtype::I16,
        "U16" => Dtype::U16,
        "F16" => Dtype::F16,
        "BF16" => Dtype::BF16,
        "I32" => Dtype::I32,
        "U32" => Dtype::U32,
        "F32" => Dtype::F32,
        "F64" => Dtype::F64,
        "I64" => Dtype::I64,
        "U64" => Dtype::U64,
        "C64" => Dtype::C64,
        "F4" => Dtype::F4,
        "F6_E2M3" => Dtype::F6_E2M3,
        "F6_E3M2" => Dtype::F6_E3M2,
        other => panic!("unknown dtype {other}"),
    }
}

/// Little-endian F32 bytes.
pub fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian F64 bytes.
pub fn f64_le(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian BF16 bytes (round to nearest even).
pub fn bf16_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect()
}

/// Little-endian F16 bytes.
pub fn f16_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()
}

/// A canonical file written by the `safetensors` crate (tensors sorted by alignment, then name).
pub fn serialize(tensors: &[T], metadata: Option<&[(&str, &str)]>) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            (t.name.clone(), TensorView::new(dtype_of(&t.dtype), shape, &t.data).expect("valid tensor view"))
        })
        .collect();
    let meta: Option<HashMap<String, String>> =
        metadata.map(|m| m.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    safetensors::serialize(views, meta).expect("safetensors::serialize")
}

/// Writes a canonical file.
pub fn write(path: &Path, tensors: &[T], metadata: Option<&[(&str, &str)]>) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, serialize(tensors, metadata)).unwrap();
}

/// The 8-byte little-endian header length, the header bytes, then the data bytes.
pub fn raw(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

/// How to lay out a file by hand.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Order of the tensors in the JSON header (indices into the tensor list); default: data order.
    pub json_order: Option<Vec<usize>>,
    /// Raw JSON object text for `__metadata__`, placed first.
    pub metadata: Option<String>,
    /// Pad the header with spaces to a multiple of this many bytes (0: no padding).
    pub pad_to: usize,
    /// Bytes of filler between consecutive tensors' data (not valid for the `safetensors`
    /// library, which wants the data packed, but a layout mlv must keep).
    pub gap: usize,
}

/// A file with tensors stored in list order, a loosely formatted header and the given layout.
pub fn hand_written(tensors: &[T], layout: &Layout) -> Vec<u8> {
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        if i > 0 {
            data.extend(std::iter::repeat_n(0xA5u8, layout.gap));
        }
        let start = data.len();
        data.extend_from_slice(&t.data);
        offsets.push((start, data.len()));
    }
    let order: Vec<usize> = layout.json_order.clone().unwrap_or_else(|| (0..tensors.len()).collect());
    let mut parts = Vec::new();
    if let Some(m) = &layout.metadata {
        parts.push(format!("\"__metadata__\" :  {m}"));
    }
    for &i in &order {
        let t = &tensors[i];
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        parts.push(format!(
            "\"{}\" : {{ \"dtype\" : \"{}\",  \"shape\" : [ {} ] , \"data_offsets\" : [ {} , {} ] }}",
            t.name,
            t.dtype,
            shape.join(", "),
            offsets[i].0,
            offsets[i].1
        ));
    }
    let mut header = format!("{{\n  {}\n}}", parts.join(",\n  ")).into_bytes();
    if layout.pad_to > 0 {
        while header.len() % layout.pad_to != 0 {
            header.push(b' ');
        }
    }
    raw(&header, &data)
}

/// Names, dtypes and shapes of a file as the `safetensors` crate reads it (sorted by name).
pub fn describe(bytes: &[u8]) -> Vec<(String, String, Vec<usize>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("the safetensors crate rejects the file");
    let mut out: Vec<_> =
        st.tensors().into_iter().map(|(n, v)| (n, format!("{:?}", v.dtype()), v.shape().to_vec())).collect();
    out.sort();
    out
}

/// A float tensor of a synthetic model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Values.
    pub values: Vec<f32>,
}

impl Weights {
    /// As F32.
    pub fn to_f32(&self) -> T {
        T::f32(&self.name, &self.shape, &self.values)
    }

    /// As BF16.
    pub fn to_bf16(&self) -> T {
        T::bf16(&self.name, &self.shape, &self.values)
    }
}

/// A small transformer-like model: embeddings, `layers` blocks of attention and MLP, norms.
pub fn base_model(seed: u64, hidden: u64, layers: usize, vocab: u64) -> Vec<Weights> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<u64>, rng: &mut Rng, norm: bool| {
        let n: u64 = shape.iter().product();
        let values = (0..n).map(|_| if norm { 1.0 + rng.normal(0.01) } else { rng.normal(0.02) }).collect();
        out.push(Weights { name, shape, values });
    };
    push("embeddings.word.weight".into(), vec![vocab, hidden], &mut rng, false);
    for l in 0..layers {
        for p in ["q", "k", "v", "o"] {
            push(format!("layers.{l}.attn.{p}.weight"), vec![hidden, hidden], &mut rng, false);
        }
        push(format!("layers.{l}.mlp.up.weight"), vec![2 * hidden, hidden], &mut rng, false);
        push(format!("layers.{l}.mlp.down.weight"), vec![hidden, 2 * hidden], &mut rng, false);
        push(format!("layers.{l}.norm.weight"), vec![hidden], &mut rng, true);
    }
    push("final_norm.weight".into(), vec![hidden], &mut rng, true);
    out
}

/// A fine-tune of `base`: every weight nudged by a few learning rates on a fraction of
/// elements (what AdamW does), to be stored as BF16.
pub fn fine_tune(base: &[Weights], seed: u64, fraction: f32) -> Vec<Weights> {
    let mut rng = Rng::new(seed);
    base.iter()
        .map(|w| {
            let values =
                w.values.iter().map(|&x| if rng.uniform() < fraction { x + rng.normal(2e-3) } else { x }).collect();
            Weights { name: w.name.clone(), shape: w.shape.clone(), values }
        })
        .collect()
}

/// `base` with a rank-`rank` adapter merged into every attention query and value matrix
/// (`W + B·A`, in f32 as a LoRA merge computes it), the rest unchanged.
pub fn lora_merge(base: &[Weights], seed: u64, rank: usize) -> Vec<Weights> {
    let mut rng = Rng::new(seed);
    base.iter()
        .map(|w| {
            let mut values = w.values.clone();
            if let [rows, cols] = w.shape[..]
                && (w.name.ends_with("attn.q.weight") || w.name.ends_with("attn.v.weight"))
            {
                let (rows, cols) = (rows as usize, cols as usize);
                let a: Vec<f32> = (0..rank * cols).map(|_| rng.normal(0.05)).collect();
                let b: Vec<f32> = (0..rows * rank).map(|_| rng.normal(0.02)).collect();
                for (e, v) in values.iter_mut().enumerate() {
                    *v += (0..rank).map(|k| b[e / cols * rank + k] * a[k * cols + e % cols]).sum::<f32>();
                }
            }
            Weights { name: w.name.clone(), shape: w.shape.clone(), values }
        })
        .collect()
}
