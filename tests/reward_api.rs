//! The OpenAI-compatible parent and embedder against a scripted HTTP server on 127.0.0.1: good
//! answers, malformed JSON, 429/5xx errors, stalls past the client timeout, the on-disk cache.

use pgsrm::reward::Embedder;
use pgsrm::reward::api_embedder::ApiEmbedder;
use pgsrm::reward::http::ApiConfig;
use pgsrm::reward::parent::{OpenAiParent, Parent};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the server does with one request.
enum Reply {
    Json(u16, Value),
    Raw(u16, &'static str),
    /// Sleep past the client timeout, then hang up.
    Stall(Duration),
}

type Script = dyn Fn(usize, &str, &Value) -> Reply + Send + Sync;

/// A server that answers requests by a script (request number, path, JSON body), records what it
/// received, and stops by itself when dropped or after 30 s.
struct Server {
    base: String,
    requests: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(script: impl Fn(usize, &str, &Value) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (r, rec, st) = (requests.clone(), received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (r, rec, script) = (r.clone(), rec.clone(), script.clone());
                        // One thread per connection, so a stalled reply does not block the next.
                        std::thread::spawn(move || serve(stream, &r, &rec, &*script));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            base,
            requests,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn bodies(&self) -> Vec<(String, Value)> {
        self.received.lock().unwrap().clone()
    }

    fn config(&self) -> ApiConfig {
        ApiConfig {
            base_url: self.base.clone(),
            api_key_env: "PGSRM_TEST_KEY_THAT_IS_NOT_SET".into(),
            timeout: Duration::from_millis(700),
            attempts: 3,
            backoff: Duration::from_millis(10),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    count: &AtomicUsize,
    received: &Mutex<Vec<(String, Value)>>,
    script: &Script,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = count.fetch_add(1, Ordering::SeqCst);
    received.lock().unwrap().push((path.clone(), body.clone()));
    let (status, text) = match script(n, &path, &body) {
        Reply::Json(s, v) => (s, v.to_string()),
        Reply::Raw(s, t) => (s, t.to_string()),
        Reply::Stall(d) => {
            std::thread::sleep(d);
            return;
        }
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.flush();
}

fn chat(content: &str) -> Reply {
    Reply::Json(
        200,
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}),
    )
}

/// The prompt a chat request carries.
fn user_prompt(body: &Value) -> String {
    body["messages"][1]["content"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pgsrm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const SYSTEM: &str = "You give antonyms. Reply with JSON only, exactly {\"OUTPUT\": \"<answer>\"}.";

#[test]
fn parent_asks_once_and_reuses_the_cache_across_runs() {
    let server = Server::start(|_, _, body| {
        let p = user_prompt(body);
        chat(&format!("{{\"OUTPUT\": \"answer to {p}\"}}"))
    });
    let cache = temp_dir("parent-cache").join("parent.jsonl");
    let mut parent =
        OpenAiParent::new(server.config(), "gpt-4o-mini", SYSTEM, Some(cache.clone())).unwrap();
    assert_eq!(parent.answer("hot").unwrap(), "answer to hot");
    assert_eq!(
        parent.answers(&["cold", "hot"]).unwrap(),
        vec!["answer to cold", "answer to hot"]
    );
    assert_eq!(server.count(), 2, "a prompt is asked once");

    let (path, body) = &server.bodies()[0];
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][0]["content"], SYSTEM);
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(body["messages"][1]["content"], "hot");

    // A second run on the same cache sends nothing for the prompts already asked.
    drop(parent);
    let mut again =
        OpenAiParent::new(server.config(), "gpt-4o-mini", SYSTEM, Some(cache.clone())).unwrap();
    assert_eq!(again.answer("cold").unwrap(), "answer to cold");
    assert_eq!(again.answer("hot").unwrap(), "answer to hot");
    assert_eq!(server.count(), 2);
    // Another model or another instruction is another key.
    let mut other = OpenAiParent::new(server.config(), "other-model", SYSTEM, Some(cache)).unwrap();
    other.answer("hot").unwrap();
    assert_eq!(server.count(), 3);
}

#[test]
fn parent_falls_back_on_malformed_json() {
    let server = Server::start(|_, _, body| match user_prompt(body).as_str() {
        "broken" => chat("{\"OUTPUT\": \"fruit\""),
        "chatty" => chat("Sure, here it is: {\"OUTPUT\": \"cold\"} Hope that helps!"),
        "fenced" => chat("```json\n{\"OUTPUT\": \"vehicle\"}\n```"),
        _ => chat("  just text\n"),
    });
    let mut parent = OpenAiParent::new(server.config(), "m", SYSTEM, None).unwrap();
    assert_eq!(parent.answer("broken").unwrap(), "fruit");
    assert_eq!(parent.answer("chatty").unwrap(), "cold");
    assert_eq!(parent.answer("fenced").unwrap(), "vehicle");
    assert_eq!(parent.answer("plain").unwrap(), "just text");
    assert_eq!(server.count(), 4);
}

#[test]
fn rate_limits_server_errors_and_stalls_are_retried() {
    let server = Server::start(|n, _, _| match n {
        0 => Reply::Json(429, json!({"error": {"message": "slow down"}})),
        1 => Reply::Raw(500, "internal error"),
        2 => Reply::Stall(Duration::from_millis(2000)),
        3 => Reply::Raw(200, "{\"choices\": [ not json"),
        _ => chat("{\"OUTPUT\": \"green\"}"),
    });
    let mut config = server.config();
    config.attempts = 5;
    let mut parent = OpenAiParent::new(config, "m", SYSTEM, None).unwrap();
    let start = Instant::now();
    assert_eq!(parent.answer("blue and yellow").unwrap(), "green");
    assert_eq!(server.count(), 5);
    assert_eq!(parent.requests_sent(), 5);
    // Back-off 10 + 20 + 40 + 80 ms and one 700 ms timeout: well under the 2 s stall.
    assert!(
        start.elapsed() < Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn the_last_failure_is_reported_after_the_last_retry() {
    let server = Server::start(|_, _, _| Reply::Raw(503, "overloaded"));
    let mut parent = OpenAiParent::new(server.config(), "m", SYSTEM, None).unwrap();
    let err = format!("{:#}", parent.answer("x").unwrap_err());
    assert_eq!(server.count(), 3);
    assert!(
        err.contains(&format!("{}/chat/completions", server.base)),
        "{err}"
    );
    assert!(
        err.contains("3 tries") && err.contains("503") && err.contains("overloaded"),
        "{err}"
    );

    let stall = Server::start(|_, _, _| Reply::Stall(Duration::from_millis(1500)));
    let mut config = stall.config();
    config.attempts = 2;
    config.timeout = Duration::from_millis(200);
    let mut parent = OpenAiParent::new(config, "m", SYSTEM, None).unwrap();
    let err = format!("{:#}", parent.answer("x").unwrap_err());
    assert_eq!(stall.count(), 2);
    assert!(
        err.contains("timed out") && err.contains("2 tries"),
        "{err}"
    );
}

#[test]
fn client_errors_are_not_retried() {
    let server = Server::start(|_, _, _| Reply::Json(401, json!({"error": "bad key"})));
    let mut parent = OpenAiParent::new(server.config(), "m", SYSTEM, None).unwrap();
    let err = format!("{:#}", parent.answer("x").unwrap_err());
    assert_eq!(server.count(), 1);
    assert!(
        err.contains("401") && err.contains("PGSRM_TEST_KEY_THAT_IS_NOT_SET"),
        "{err}"
    );
}

#[test]
fn a_connection_refused_is_retried_then_named() {
    // Bind then drop, so the port is very likely closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ApiConfig {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        api_key_env: "PGSRM_TEST_KEY_THAT_IS_NOT_SET".into(),
        timeout: Duration::from_millis(500),
        attempts: 2,
        backoff: Duration::from_millis(5),
    };
    let mut parent = OpenAiParent::new(config, "m", SYSTEM, None).unwrap();
    let err = format!("{:#}", parent.answer("x").unwrap_err());
    assert_eq!(parent.requests_sent(), 2);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("2 tries"),
        "{err}"
    );
}

#[test]
fn a_cache_torn_by_a_killed_run_still_loads() {
    let server = Server::start(|_, _, body| {
        chat(&format!("{{\"OUTPUT\": \"fresh {}\"}}", user_prompt(body)))
    });
    let cache = temp_dir("torn-cache").join("parent.jsonl");
    {
        let mut parent =
            OpenAiParent::new(server.config(), "m", SYSTEM, Some(cache.clone())).unwrap();
        parent.answer("a").unwrap();
        parent.answer("b").unwrap();
    }
    assert_eq!(server.count(), 2);
    // A run killed while writing its third line leaves half a line and no newline.
    let whole = std::fs::read_to_string(&cache).unwrap();
    let line = whole.lines().next().unwrap().replace("\"a\"", "\"c\"");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&cache)
        .unwrap();
    f.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
    drop(f);

    let mut parent = OpenAiParent::new(server.config(), "m", SYSTEM, Some(cache.clone())).unwrap();
    assert_eq!(parent.answer("a").unwrap(), "fresh a");
    assert_eq!(parent.answer("b").unwrap(), "fresh b");
    assert_eq!(server.count(), 2, "both whole lines were kept");
    assert_eq!(parent.answer("c").unwrap(), "fresh c");
    assert_eq!(server.count(), 3, "the torn entry is asked again");
    drop(parent);
    // The torn fragment is gone and every line is whole JSON.
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(text.lines().count(), 3);
    for l in text.lines() {
        serde_json::from_str::<Value>(l).unwrap();
    }

    // Damage in the middle of the file is not a torn write: it is an error naming file and line.
    let bad = cache.with_file_name("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{oops\n{}\n",
            text.lines().next().unwrap(),
            text.lines().nth(1).unwrap()
        ),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        OpenAiParent::new(server.config(), "m", SYSTEM, Some(bad))
            .err()
            .unwrap()
    );
    assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");
}

/// A deterministic vector for a text: its length, its count of 'a', and 1.
fn vector_for(text: &str) -> Vec<f32> {
    vec![text.len() as f32, text.matches('a').count() as f32, 1.0]
}

fn embeddings_reply(body: &Value, reverse: bool) -> Reply {
    let inputs: Vec<String> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector_for(t)}))
        .collect();
    if reverse {
        data.reverse();
    }
    Reply::Json(
        200,
        json!({"object": "list", "data": data, "model": body["model"]}),
    )
}

#[test]
fn embedder_normalises_batches_and_caches() {
    let server = Server::start(|_, _, body| embeddings_reply(body, true));
    let cache = temp_dir("embed-cache").join("vectors.jsonl");
    let e = ApiEmbedder::new(
        server.config(),
        "text-embedding-3-large",
        Some(3),
        Some(cache.clone()),
    )
    .unwrap();
    assert_eq!(server.count(), 0);
    let texts = ["  Banana ", "banana", "", "A cat", "   "];
    let v = e.embed(&texts).unwrap();
    assert_eq!(server.count(), 1, "one request for the whole batch");
    let (path, body) = &server.bodies()[0];
    assert_eq!(path, "/v1/embeddings");
    assert_eq!(body["model"], "text-embedding-3-large");
    let mut sent: Vec<&str> = body["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        vec!["a cat", "banana"],
        "stripped, lower-cased, deduplicated, no empties"
    );
    assert_eq!(v[0], vector_for("banana"));
    assert_eq!(v[1], vector_for("banana"));
    assert_eq!(v[2], vec![0.0; 3]);
    assert_eq!(v[3], vector_for("a cat"));
    assert_eq!(v[4], vec![0.0; 3]);
    assert_eq!(e.dim(), 3);

    // A second embedder on the same cache sends only what is new.
    let again = ApiEmbedder::new(
        server.config(),
        "text-embedding-3-large",
        Some(3),
        Some(cache),
    )
    .unwrap();
    assert_eq!(
        again.embed(&["BANANA", "a cat"]).unwrap(),
        vec![vector_for("banana"), vector_for("a cat")]
    );
    assert_eq!(server.count(), 1);
    again.embed(&["new text"]).unwrap();
    assert_eq!(server.count(), 2);
}

#[test]
fn embedder_learns_its_dimension_and_retries() {
    let server = Server::start(|n, _, body| {
        if n == 1 {
            Reply::Raw(502, "bad gateway")
        } else {
            embeddings_reply(body, false)
        }
    });
    let e = ApiEmbedder::new(server.config(), "m", None, None).unwrap();
    assert_eq!(e.dim(), 3);
    assert_eq!(server.count(), 1);
    assert_eq!(e.embed(&["x"]).unwrap(), vec![vector_for("x")]);
    assert_eq!(server.count(), 3, "the 502 was retried");
}

#[test]
fn embedder_failures_are_errors_not_zero_vectors() {
    let server = Server::start(|_, _, _| Reply::Json(429, json!({"error": "rate limited"})));
    let e = ApiEmbedder::new(server.config(), "m", Some(3), None).unwrap();
    let err = format!("{:#}", e.embed(&["hello"]).unwrap_err());
    assert_eq!(server.count(), 3);
    assert!(
        err.contains("/v1/embeddings") && err.contains("429") && err.contains("3 tries"),
        "{err}"
    );

    // A wrong vector length or a short data list is an error too.
    let short = Server::start(|_, _, _| {
        Reply::Json(
            200,
            json!({"data": [{"index": 0, "embedding": [1.0, 2.0]}]}),
        )
    });
    let e = ApiEmbedder::new(short.config(), "m", Some(3), None).unwrap();
    assert!(e.embed(&["one"]).is_err());
    assert!(e.embed(&["one", "two"]).is_err());
}

#[test]
fn reward_cli_with_the_api_embedder() {
    let server = Server::start(|_, _, body| embeddings_reply(body, false));
    let cache = temp_dir("cli-cache").join("vectors.jsonl");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgsrm"))
        .args([
            "reward",
            "--parent",
            "aaa",
            "--child",
            "  AAA ",
            "--all",
            "--embedder",
            "api",
        ])
        .args([
            "--api-base",
            &server.base,
            "--api-key-env",
            "PGSRM_TEST_KEY_THAT_IS_NOT_SET",
        ])
        .args(["--api-cache", cache.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pair = &v["pairs"][0];
    // Same text after strip + lower-case: the same vector, so every shaping gives its maximum.
    assert_eq!(pair["cosine"], 1.0);
    for s in ["pgsrm", "truncate", "euclidean", "binary"] {
        assert_eq!(pair["rewards"][s], 1.0, "{s}");
    }
    // One probe for the dimension, one for the texts.
    assert_eq!(server.count(), 2);
}
