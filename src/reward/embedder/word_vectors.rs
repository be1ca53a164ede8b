//! Word vectors in the ConceptNet Numberbatch text format, averaged over the words of a text as
//! the paper's lexical tasks do.
//!
//! File: a header line `count dim`, then `count` lines `word v1 ... vD`, separated by ASCII
//! whitespace; optionally gzipped (detected by the gzip magic bytes, whatever the file is called).
//! Words may carry ConceptNet's `/c/en/` prefix; entries of other languages (`/c/fr/...`) are
//! read but not indexed, since the texts we embed are English.
//!
//! Text: lower-cased, every character that is not a letter becomes a space, and the vectors of
//! the words found in the table are averaged; no word found gives the zero vector.

use crate::reward::Embedder;
use anyhow::{Context, Result, bail};
use flate2::read::MultiGzDecoder;
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Bytes read per step: lines of a step are parsed in parallel; the text of a whole file is never
/// held in memory at once.
const BLOCK_BYTES: usize = 16 << 20;

/// Largest table accepted (count x dim), 16 GiB of f32: a guard against a corrupt header.
const MAX_VALUES: usize = 1 << 32;

pub struct WordVectors {
    path: PathBuf,
    dim: usize,
    index: HashMap<String, u32>,
    /// (count, dim)
    data: Vec<f32>,
    name: String,
}

/// The word of a table entry, or None for another language's entry.
fn english_key(word: &str) -> Option<&str> {
    match word.strip_prefix("/c/") {
        None => Some(word),
        Some(rest) => rest.strip_prefix("en/"),
    }
}

/// Parses `word v1 ... vD` into `out` (D); returns the word.
fn parse_vector_line<'a>(
    path: &Path,
    line_no: usize,
    line: &'a str,
    out: &mut [f32],
) -> Result<&'a str> {
    let mut tokens = line.split_ascii_whitespace();
    let word = tokens.next().unwrap_or("");
    let mut k = 0;
    for tok in tokens {
        if k == out.len() {
            bail!(
                "{}:{line_no}: more than {} numbers after '{word}'",
                path.display(),
                out.len()
            );
        }
        match parse_f32(tok) {
            Ok(v) if v.is_finite() => out[k] = v,
            _ => bail!(
                "{}:{line_no}: '{tok}' after '{word}' is not a finite number",
                path.display()
            ),
        }
        k += 1;
    }
    if k != out.len() {
        bail!(
            "{}:{line_no}: expected {} numbers after '{word}', found {k}",
            path.display(),
            out.len()
        );
    }
    Ok(word)
}

const POW10: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// A decimal number. Plain `-0.0123`-style numbers (at most 7 significant digits and 10
/// decimals, which is every Numberbatch value) take a fast path: the digits and the power of ten
/// are both exact in f32, so one division rounds correctly and the result equals what
/// `str::parse` gives. Anything else (exponents, long mantissas) goes to `str::parse`.
fn parse_f32(tok: &str) -> Result<f32, std::num::ParseFloatError> {
    let b = tok.as_bytes();
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mut mantissa: u32 = 0;
    let mut n_digits = 0;
    let mut decimals: Option<usize> = None;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa.wrapping_mul(10).wrapping_add((c - b'0') as u32);
                n_digits += 1;
                if let Some(d) = decimals.as_mut() {
                    *d += 1;
                }
            }
            b'.' if decimals.is_none() => decimals = Some(0),
            _ => return tok.parse(),
        }
    }
    let decimals = decimals.unwrap_or(0);
    if n_digits == 0 || n_digits > 7 || decimals > 10 {
        return tok.parse();
    }
    let v = mantissa as f32 / POW10[decimals];
    Ok(if neg { -v } else { v })
}

fn parse_header(path: &Path, line: &str) -> Result<(usize, usize)> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let parsed = match fields.as_slice() {
        [n, d] => n.parse::<usize>().ok().zip(d.parse::<usize>().ok()),
        _ => None,
    };
    match parsed {
        Some((n, d)) if d > 0 => Ok((n, d)),
        _ => bail!(
            "{}:1: the first line must be the header `count dim` (two positive integers), found '{}'",
            path.display(),
            line.chars().take(80).collect::<String>()
        ),
    }
}

impl WordVectors {
    /// Reads a Numberbatch-format file, plain or gzipped.
    pub fn load(path: &Path) -> Result<Self> {
        let mut file = File::open(path)
            .with_context(|| format!("opening word-vector file {}", path.display()))?;
        let mut magic = [0u8; 2];
        let gz = file.read(&mut magic).unwrap_or(0) == 2 && magic == [0x1f, 0x8b];
        drop(file);
        let file = File::open(path)
            .with_context(|| format!("opening word-vector file {}", path.display()))?;
        let reader: Box<dyn Read> = if gz {
            Box::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file)))
        } else {
            Box::new(file)
        };
        Self::read(path, reader)
    }

    fn read(path: &Path, mut reader: Box<dyn Read>) -> Result<Self> {
        let mut buf: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + (1 << 16));
        let mut header: Option<(usize, usize)> = None;
        let mut data: Vec<f32> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut rows = 0usize;
        let mut line_no = 0usize; // lines consumed so far
        let mut eof = false;
        while !eof {
            // Fill the buffer up to a block, then cut it after its last complete line.
            let mut chunk = [0u8; 1 << 16];
            while buf.len() < BLOCK_BYTES {
                let got = reader
                    .read(&mut chunk)
                    .with_context(|| format!("reading {}", path.display()))?;
                if got == 0 {
                    eof = true;
                    break;
                }
                buf.extend_from_slice(&chunk[..got]);
            }
            let end = if eof {
                buf.len()
            } else {
                match buf.iter().rposition(|&b| b == b'\n') {
                    Some(p) => p + 1,
                    None => continue, // one line longer than a block: read more
                }
            };
            let text = std::str::from_utf8(&buf[..end]).map_err(|e| {
                let bad_line = line_no
                    + 1
                    + buf[..e.valid_up_to()]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count();
                anyhow::anyhow!("{}:{bad_line}: not valid UTF-8", path.display())
            })?;

            let mut block_lines: Vec<(usize, &str)> = Vec::new();
            for line in text.split('\n') {
                line_no += 1;
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.trim().is_empty() {
                    continue;
                }
                if header.is_none() {
                    let (n, d) = parse_header(path, line)?;
                    if n.checked_mul(d).is_none_or(|total| total > MAX_VALUES) {
                        bail!(
                            "{}:1: the header announces {n} x {d} values, more than this loader takes ({MAX_VALUES})",
                            path.display()
                        );
                    }
                    header = Some((n, d));
                    continue;
                }
                block_lines.push((line_no, line));
            }
            // `split` yields one empty piece after a final '\n'; it is not a line of the file.
            if text.ends_with('\n') {
                line_no -= 1;
            }
            let Some((count, dim)) = header else {
                if eof {
                    bail!(
                        "{}: empty file (no header line `count dim`)",
                        path.display()
                    );
                }
                buf.drain(..end);
                continue;
            };
            if rows + block_lines.len() > count {
                let extra = block_lines[count - rows].0;
                bail!(
                    "{}:{extra}: more vectors than the header's count ({count})",
                    path.display()
                );
            }
            // Grown block by block, so a header that overstates the count costs no memory.
            data.resize((rows + block_lines.len()) * dim, 0.0);
            let slots = &mut data[rows * dim..];
            let words: Vec<&str> = slots
                .par_chunks_mut(dim)
                .zip(block_lines.par_iter())
                .map(|(slot, &(n, line))| parse_vector_line(path, n, line, slot))
                .collect::<Result<Vec<&str>>>()?;
            index.reserve(words.len());
            for (k, word) in words.into_iter().enumerate() {
                if let Some(key) = english_key(word) {
                    // The first entry of a repeated word wins, as a dict built in order would not;
                    // Numberbatch has no repeats, so this only matters for hand-made files.
                    index.entry(key.to_string()).or_insert((rows + k) as u32);
                }
            }
            rows += block_lines.len();
            drop(block_lines);
            buf.drain(..end);
        }
        let Some((count, dim)) = header else {
            bail!(
                "{}: empty file (no header line `count dim`)",
                path.display()
            );
        };
        if rows != count {
            bail!(
                "{}: the header says {count} vectors but the file has {rows} (truncated?)",
                path.display()
            );
        }
        Ok(WordVectors {
            path: path.to_path_buf(),
            dim,
            index,
            data,
            name: format!(
                "word-vectors:{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of words that texts can match.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The vector of one table word (exact match, after the `/c/en/` prefix is removed).
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        self.index.get(word).map(|&r| {
            let r = r as usize;
            &self.data[r * self.dim..(r + 1) * self.dim]
        })
    }

    /// The average of the vectors of the text's words found in the table; zeros when none is.
    pub fn embed_text(&self, text: &str) -> Vec<f32> {
        let cleaned = normalize_text(text);
        let mut v = vec![0.0f32; self.dim];
        let mut found = 0usize;
        for word in cleaned.split_ascii_whitespace() {
            if let Some(w) = self.get(word) {
                for (a, b) in v.iter_mut().zip(w) {
                    *a += b;
                }
                found += 1;
            }
        }
        if found > 0 {
            for a in v.iter_mut() {
                *a /= found as f32;
            }
        }
        v
    }
}

/// Lower-cases the text and turns every character that is not a letter into a space.
pub fn normalize_text(text: &str) -> String {
    text.chars()
        .flat_map(char::to_lowercase)
        .map(|ch| if ch.is_alphabetic() { ch } else { ' ' })
        .collect()
}

impl Embedder for WordVectors {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.embed_text(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_f32;

    #[test]
    fn fast_float_path_equals_std_parse() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "1",
            "-1.5",
            "0.1",
            "-0.0247",
            "+3.25",
            "1234567",
            "0.0000001",
            "9.999999",
            "12345678",
            "1e-3",
            "-2.5E2",
            ".5",
            "5.",
            "0.12345678901",
            "inf",
            "nan",
            "1.2.3",
            "",
            "-",
            "abc",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every four-decimal value between -1 and 1 as Numberbatch writes them.
        for v in -10_000i32..=10_000 {
            let a = v.unsigned_abs();
            let sign = if v < 0 { "-" } else { "" };
            cases.push(format!("{sign}{}.{:04}", a / 10_000, a % 10_000));
        }
        for c in &cases {
            let fast = parse_f32(c);
            let std = c.parse::<f32>();
            match (fast, std) {
                (Ok(a), Ok(b)) => assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{c}: {a} vs {b}"
                ),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{c}: {a:?} vs {b:?}"),
            }
        }
    }
}
