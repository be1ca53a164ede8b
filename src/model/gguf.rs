//! GGUF files (the llama.cpp format): header, metadata, tensor table, and tensors dequantised to
//! f32. Versions 2 and 3; tensor types F32, F16, Q8_0 and Q4_1. GGUF lists a tensor's dimensions
//! fastest-first; `GgufTensorInfo::shape` holds them reversed, in row-major order.
//!
//! A small writer is included so that tests (and tools) can produce GGUF files from raw blocks.

use crate::files::write_atomic;
use crate::tensor::Tensor;
use anyhow::{Context, Result, bail};
use half::f16;
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: usize = 32;

/// The ggml tensor types this reader dequantises; others are reported by number and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
        }
    }

    fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(GgmlType::F32),
            1 => Some(GgmlType::F16),
            3 => Some(GgmlType::Q4_1),
            8 => Some(GgmlType::Q8_0),
            _ => None,
        }
    }

    /// (values per block, bytes per block)
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 => (1, 2),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }

    /// Bytes taken by `n` values; `None` when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (vals, bytes) = self.block();
        n.is_multiple_of(vals).then_some(n / vals * bytes)
    }
}

/// Names of ggml's tensor types, for error messages about the ones we do not read.
fn ggml_type_name(id: u32) -> &'static str {
    match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        _ => "unknown",
    }
}

/// A metadata value of any GGUF type.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The GGUF type number of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// Any integer type that fits, as u64 (negative values do not).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Either float type, or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Row-major (slowest-first): the reverse of the order the file lists.
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section.
    pub offset: usize,
}

impl GgufTensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A whole GGUF file read into memory once.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: usize,
    /// Byte offset of the data section in `bytes`.
    pub data_offset: usize,
    index: HashMap<String, usize>,
    meta_index: HashMap<String, usize>,
    bytes: Vec<u8>,
}

/// A cursor over the file's bytes that turns running off the end into a clear error.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            bail!(
                "truncated: needed {n} bytes at offset {} but the file has {}",
                self.pos,
                self.bytes.len()
            );
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A length or count that must also fit in what is left of the file (at `min_each` bytes per
    /// element), so that a corrupt count fails here instead of in a huge allocation.
    fn count(&mut self, min_each: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_each.max(1) as u64) > left {
            bail!(
                "truncated or corrupt: a count of {n} at offset {at} is more than the {left} bytes left"
            );
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String> {
        let at = self.pos;
        let n = self.count(1)?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).with_context(|| format!("string at offset {at} is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.u8()?),
            1 => GgufValue::I8(self.u8()? as i8),
            2 => GgufValue::U16(self.u16()?),
            3 => GgufValue::I16(self.u16()? as i16),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(self.u32()? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32()?)),
            7 => match self.u8()? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => bail!("bool at offset {} is {b}, not 0 or 1", self.pos - 1),
            },
            8 => GgufValue::String(self.string()?),
            9 => {
                if depth > 8 {
                    bail!("arrays nested too deep at offset {}", self.pos);
                }
                let elem = self.u32()?;
                let n = self.count(1)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(self.u64()? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64()?)),
            t => bail!("unknown metadata value type {t} at offset {}", self.pos - 4),
        })
    }
}

impl GgufFile {
    /// Reads and parses a GGUF file; errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read GGUF file {}", path.display()))?;
        Self::parse(bytes, path).with_context(|| format!("GGUF file {}", path.display()))
    }

    /// Parses GGUF bytes; `path` is only recorded for messages.
    pub fn parse(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        let mut r = Reader {
            bytes: &bytes,
            pos: 0,
        };
        let magic = r.take(4).context("no GGUF header")?;
        if magic != GGUF_MAGIC {
            bail!(
                "bad magic {:?}: not a GGUF file (expected \"GGUF\")",
                String::from_utf8_lossy(magic)
            );
        }
        let version = r.u32()?;
        if version != 2 && version != 3 {
            bail!("GGUF version {version} is not supported (2 and 3 are)");
        }
        // Each tensor-table entry takes at least 8 + 4 + 4 + 8 bytes; each metadata entry 8 + 4 + 1.
        let n_tensors = r.count(24)?;
        let n_kv = r.count(13)?;
        let mut metadata = Vec::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = r.string().with_context(|| format!("metadata entry {i}"))?;
            let ty = r.u32()?;
            let v = r
                .value(ty, 0)
                .with_context(|| format!("metadata value of '{key}'"))?;
            metadata.push((key, v));
        }
        let meta_index: HashMap<String, usize> = metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let alignment = match meta_index.get("general.alignment") {
            Some(&i) => {
                let a = metadata[i].1.as_u64().unwrap_or(0) as usize;
                if a == 0 || !a.is_power_of_two() {
                    bail!(
                        "general.alignment is {:?}: must be a power of two",
                        metadata[i].1
                    );
                }
                a
            }
            None => DEFAULT_ALIGNMENT,
        };
        let mut tensors = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = r
                .string()
                .with_context(|| format!("tensor table entry {i}"))?;
            let n_dims = r.u32()? as usize;
            if n_dims > 8 {
                bail!("tensor '{name}' has {n_dims} dimensions (at most 8 are allowed)");
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(r.u64()? as usize);
            }
            dims.reverse();
            let ty = r.u32()?;
            let offset = r.u64()? as usize;
            let Some(ggml_type) = GgmlType::from_id(ty) else {
                bail!(
                    "tensor '{name}' has type {} ({ty}), which is not supported (F32, F16, Q8_0 and Q4_1 are)",
                    ggml_type_name(ty)
                );
            };
            tensors.push(GgufTensorInfo {
                name,
                shape: dims,
                ggml_type,
                offset,
            });
        }
        let data_offset = r.pos.next_multiple_of(alignment);
        let data_len = bytes.len().saturating_sub(data_offset);
        for t in &tensors {
            let n = t
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .with_context(|| {
                    format!("tensor '{}' has an overflowing shape {:?}", t.name, t.shape)
                })?;
            let Some(len) = t.ggml_type.bytes_for(n) else {
                bail!(
                    "tensor '{}' of type {:?} has {n} values, not a multiple of the block size {}",
                    t.name,
                    t.ggml_type,
                    t.ggml_type.block().0
                );
            };
            if !t.offset.is_multiple_of(alignment) {
                bail!(
                    "tensor '{}' starts at data offset {}, not a multiple of the alignment {alignment}",
                    t.name,
                    t.offset
                );
            }
            if t.offset.checked_add(len).is_none_or(|e| e > data_len) {
                bail!(
                    "truncated: tensor '{}' needs bytes {}..{} of the data section, which has {data_len}",
                    t.name,
                    t.offset,
                    t.offset + len
                );
            }
        }
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            index,
            meta_index,
            bytes,
        })
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn need(&self, key: &str) -> Result<&GgufValue> {
        self.get(key).with_context(|| {
            format!(
                "GGUF file {}: metadata key '{key}' is missing",
                self.path.display()
            )
        })
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.need(key)?;
        v.as_u64().with_context(|| {
            format!(
                "GGUF file {}: '{key}' is {v:?}, not an unsigned integer",
                self.path.display()
            )
        })
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.need(key)?;
        v.as_f64().with_context(|| {
            format!(
                "GGUF file {}: '{key}' is {v:?}, not a number",
                self.path.display()
            )
        })
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.need(key)?;
        v.as_str()
            .with_context(|| format!("GGUF file {}: '{key}' is not a string", self.path.display()))
    }

    /// An array of strings (token lists, merges).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.need(key)?;
        let a = v.as_array().with_context(|| {
            format!("GGUF file {}: '{key}' is not an array", self.path.display())
        })?;
        a.iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_str().with_context(|| {
                    format!(
                        "GGUF file {}: '{key}'[{i}] is not a string",
                        self.path.display()
                    )
                })
            })
            .collect()
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor as stored.
    pub fn raw(&self, info: &GgufTensorInfo) -> &[u8] {
        let len = info.ggml_type.bytes_for(info.numel()).unwrap();
        let start = self.data_offset + info.offset;
        &self.bytes[start..start + len]
    }

    /// One tensor dequantised to f32, in row-major shape.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.tensor_info(name).with_context(|| {
            format!(
                "GGUF file {}: no tensor named '{name}'",
                self.path.display()
            )
        })?;
        let mut out = vec![0.0f32; info.numel()];
        dequantize(info.ggml_type, self.raw(info), &mut out);
        Ok(Tensor::from_vec(&info.shape, out))
    }
}

/// Decodes `raw` (whole blocks of type `ty`) into `out`, in parallel over chunks of blocks.
pub fn dequantize(ty: GgmlType, raw: &[u8], out: &mut [f32]) {
    let (vals, bytes) = ty.block();
    assert_eq!(
        raw.len() / bytes * vals,
        out.len(),
        "dequantize: size mismatch"
    );
    // Chunks of 256 blocks keep the per-task overhead small against the work.
    const BLOCKS: usize = 256;
    out.par_chunks_mut(vals * BLOCKS)
        .zip(raw.par_chunks(bytes * BLOCKS))
        .for_each(|(o, r)| {
            for (ob, rb) in o.chunks_exact_mut(vals).zip(r.chunks_exact(bytes)) {
                dequantize_block(ty, rb, ob);
            }
        });
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn dequantize_block(ty: GgmlType, b: &[u8], o: &mut [f32]) {
    match ty {
        GgmlType::F32 => o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => o[0] = f16_at(b, 0),
        GgmlType::Q8_0 => {
            let d = f16_at(b, 0);
            for j in 0..32 {
                o[j] = (b[2 + j] as i8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            let d = f16_at(b, 0);
            let m = f16_at(b, 2);
            // Byte j holds value j in its low nibble and value j + 16 in its high nibble.
            for j in 0..16 {
                let q = b[4 + j];
                o[j] = (q & 0x0F) as f32 * d + m;
                o[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
    }
}

/// A tensor to write: row-major shape, type, and its bytes already encoded in that type.
pub struct GgufTensorData {
    pub name: String,
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    pub raw: Vec<u8>,
}

fn write_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        GgufValue::Array(a) => {
            // An empty array needs some element type; u8 is as good as any.
            let elem = a.first().map(|x| x.type_id()).unwrap_or(0);
            out.extend(elem.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            for x in a {
                write_value(out, x);
            }
        }
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

/// Encodes a version-3 GGUF file. The alignment is taken from `general.alignment` if present.
pub fn encode_gguf(
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorData],
) -> Result<Vec<u8>> {
    let alignment = metadata
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .map(|a| a as usize)
        .unwrap_or(DEFAULT_ALIGNMENT);
    let mut out = Vec::new();
    out.extend(GGUF_MAGIC);
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        write_value(&mut out, &GgufValue::String(k.clone()));
        out.extend(v.type_id().to_le_bytes());
        write_value(&mut out, v);
    }
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in tensors {
        let n: usize = t.shape.iter().product();
        if t.ggml_type.bytes_for(n) != Some(t.raw.len()) {
            bail!(
                "tensor '{}': {} bytes do not hold {n} values of type {:?}",
                t.name,
                t.raw.len(),
                t.ggml_type
            );
        }
        write_value(&mut out, &GgufValue::String(t.name.clone()));
        out.extend((t.shape.len() as u32).to_le_bytes());
        for &d in t.shape.iter().rev() {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(t.ggml_type.id().to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + t.raw.len()).next_multiple_of(alignment);
    }
    out.resize(out.len().next_multiple_of(alignment), 0);
    let base = out.len();
    for (t, off) in tensors.iter().zip(offsets) {
        out.resize(base + off, 0);
        out.extend(&t.raw);
    }
    Ok(out)
}

/// Writes a GGUF file atomically (temporary file in the same folder, then rename).
pub fn write_gguf(
    path: impl AsRef<Path>,
    metadata: &[(String, GgufValue)],
    tensors: &[GgufTensorData],
) -> Result<()> {
    let path = path.as_ref();
    let bytes = encode_gguf(metadata, tensors)?;
    write_atomic(path, &bytes)
}

/// Encodes f32 values as Q8_0 blocks the way ggml does: scale = max |x| / 127, round to nearest.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(32), "Q8_0 needs whole blocks of 32");
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        for &v in b {
            out.push(((v * id).round() as i32).clamp(-127, 127) as i8 as u8);
        }
    }
    out
}

/// Encodes f32 values as Q4_1 blocks the way ggml does: min and (max - min) / 15, round to nearest.
pub fn quantize_q4_1(x: &[f32]) -> Vec<u8> {
    assert!(x.len().is_multiple_of(32), "Q4_1 needs whole blocks of 32");
    let mut out = Vec::with_capacity(x.len() / 32 * 20);
    for b in x.chunks_exact(32) {
        let min = b.iter().fold(f32::INFINITY, |a, &v| a.min(v));
        let max = b.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(f16::from_f32(min).to_le_bytes());
        for j in 0..16 {
            let lo = (((b[j] - min) * id).round() as i32).clamp(0, 15) as u8;
            let hi = (((b[j + 16] - min) * id).round() as i32).clamp(0, 15) as u8;
            out.push(lo | (hi << 4));
        }
    }
    out
}
