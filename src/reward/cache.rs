//! An append-only JSON Lines cache for answers and vectors that cost a remote call.
//!
//! One line per entry: `{"key": ["part", ...], "value": ...}`. Each entry is written with one
//! `write` call and flushed at once, so a killed run loses at most the line being written. On load,
//! a torn last line (no trailing newline, not valid JSON: what a kill leaves) is dropped and cut
//! from the file, so the next append starts on a clean line. A malformed line elsewhere is an error
//! naming the file and line: that is damage, not an interrupted write. A later entry for the same
//! key wins.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct JsonlCache {
    path: PathBuf,
    map: HashMap<String, Value>,
    file: Option<File>,
}

#[derive(serde::Deserialize)]
struct Line {
    key: Vec<String>,
    value: Value,
}

fn map_key(parts: &[&str]) -> String {
    serde_json::to_string(parts).expect("a list of strings serialises")
}

impl JsonlCache {
    /// Opens (or will create, on the first `put`) the cache at `path`, loading what is there.
    pub fn open(path: impl AsRef<Path>) -> Result<JsonlCache> {
        let path = path.as_ref().to_path_buf();
        let mut map = HashMap::new();
        if path.exists() {
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading cache {}", path.display()))?;
            let mut start = 0usize;
            let mut line_no = 0usize;
            let mut keep = bytes.len();
            while start < bytes.len() {
                line_no += 1;
                let end = bytes[start..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|i| start + i);
                let raw = &bytes[start..end.unwrap_or(bytes.len())];
                let parsed = std::str::from_utf8(raw)
                    .map_err(anyhow::Error::from)
                    .and_then(|s| {
                        if s.trim().is_empty() {
                            Ok(None)
                        } else {
                            serde_json::from_str::<Line>(s)
                                .map(Some)
                                .map_err(anyhow::Error::from)
                        }
                    });
                match (parsed, end) {
                    (Ok(Some(line)), _) => {
                        let parts: Vec<&str> = line.key.iter().map(String::as_str).collect();
                        map.insert(map_key(&parts), line.value);
                    }
                    (Ok(None), _) => {}
                    (Err(_), None) => {
                        // The last line, unterminated and unreadable: a write cut short.
                        keep = start;
                        break;
                    }
                    (Err(e), Some(_)) => {
                        bail!("cache {} line {line_no} is malformed: {e}", path.display())
                    }
                }
                start = match end {
                    Some(e) => e + 1,
                    None => bytes.len(),
                };
            }
            if keep < bytes.len() || (keep > 0 && bytes[keep - 1] != b'\n') {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("repairing cache {}", path.display()))?;
                f.set_len(keep as u64)
                    .with_context(|| format!("repairing cache {}", path.display()))?;
                if keep > 0 && bytes[keep - 1] != b'\n' {
                    // A complete last entry without its newline: end it so appends stay separate.
                    let mut f = OpenOptions::new().append(true).open(&path)?;
                    f.write_all(b"\n")?;
                }
            }
        }
        Ok(JsonlCache {
            path,
            map,
            file: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The cached value for `key`, if any and if it has the expected shape.
    pub fn get<T: DeserializeOwned>(&self, key: &[&str]) -> Option<T> {
        self.map
            .get(&map_key(key))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Records `value` under `key`, in memory and on disk (appended and flushed before returning).
    pub fn put<T: Serialize>(&mut self, key: &[&str], value: &T) -> Result<()> {
        let value_json = serde_json::to_string(value).context("serialising a cache value")?;
        let mut line = format!("{{\"key\":{},\"value\":{}}}", map_key(key), value_json);
        line.push('\n');
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating cache folder {}", dir.display()))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| format!("opening cache {}", self.path.display()))?;
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        // One write of the whole line: with O_APPEND it lands in one piece or is cut at the end.
        f.write_all(line.as_bytes())
            .and_then(|_| f.flush())
            .with_context(|| format!("appending to cache {}", self.path.display()))?;
        self.map.insert(
            map_key(key),
            serde_json::from_str(&value_json).context("re-reading a cache value")?,
        );
        Ok(())
    }
}
