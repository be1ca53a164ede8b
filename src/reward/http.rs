//! The client for OpenAI-compatible endpoints (`/chat/completions`, `/embeddings`), shared by the
//! API parent and the API embedder.
//!
//! Rate limits (429), server errors (5xx), timeouts, dropped connections and unreadable response
//! bodies are retried with exponential back-off (docs/METHOD.md: three tries, waiting 2 s then 4 s). Other
//! client errors (400, 401, 404, ...) are not: asking again cannot fix them. After the last try the
//! error names the URL, the number of tries and the last failure.

use anyhow::{Result, bail};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Where and how to reach an OpenAI-compatible server.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Base URL up to and including the version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the key. When it is unset, requests go without an
    /// `Authorization` header (local servers rarely want one).
    pub api_key_env: String,
    /// Limit for one request, from connecting to the end of the response body.
    pub timeout: Duration,
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second try; it doubles before each further one.
    pub backoff: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            base_url: "https://api.openai.com/v1".into(),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout: Duration::from_secs(60),
            attempts: 3,
            backoff: Duration::from_secs(2),
        }
    }
}

pub struct ApiClient {
    config: ApiConfig,
    agent: ureq::Agent,
    key: Option<String>,
    requests: AtomicUsize,
}

/// One failed try, and whether another might succeed.
struct Failure {
    message: String,
    retry: bool,
}

impl ApiClient {
    pub fn new(config: ApiConfig) -> Result<ApiClient> {
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            bail!(
                "API base URL {:?} must start with http:// or https://",
                config.base_url
            );
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            // Statuses are read and classified here, with the body kept for the error message.
            .http_status_as_error(false)
            .build()
            .into();
        let key = std::env::var(&config.api_key_env)
            .ok()
            .filter(|k| !k.trim().is_empty());
        Ok(ApiClient {
            config,
            agent,
            key,
            requests: AtomicUsize::new(0),
        })
    }

    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// The full URL for an endpoint path such as `chat/completions`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/{}",
            self.config.base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests_sent(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// POSTs `body` as JSON to `path` and returns the parsed JSON response, retrying as described in
    /// the module documentation.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let url = self.url(path);
        let attempts = self.config.attempts.max(1);
        let mut wait = self.config.backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.try_once(&url, body) {
                Ok(v) => return Ok(v),
                Err(f) if !f.retry => {
                    bail!("POST {url} failed: {}", f.message)
                }
                Err(f) => last = f.message,
            }
            if attempt < attempts {
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
            }
        }
        bail!("POST {url} failed after {attempts} tries; the last failure: {last}")
    }

    fn try_once(&self, url: &str, body: &Value) -> std::result::Result<Value, Failure> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json");
        if let Some(k) = &self.key {
            req = req.header("Authorization", format!("Bearer {k}"));
        }
        let payload = serde_json::to_vec(body).map_err(|e| Failure {
            message: format!("could not serialise the request: {e}"),
            retry: false,
        })?;
        let mut resp = req.send(&payload[..]).map_err(|e| Failure {
            message: describe(&e),
            retry: true,
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| Failure {
            message: format!("HTTP {status}, reading the body: {}", describe(&e)),
            retry: true,
        });
        let text = match text {
            Ok(t) => t,
            Err(f) if (200..300).contains(&status) => return Err(f),
            Err(_) => String::new(),
        };
        if !(200..300).contains(&status) {
            let retry = status == 429 || status == 408 || status >= 500;
            let mut message = format!("HTTP {status}: {}", snippet(&text));
            if (status == 401 || status == 403) && self.key.is_none() {
                message.push_str(&format!(
                    " (no key was sent: ${} is not set)",
                    self.config.api_key_env
                ));
            }
            return Err(Failure { message, retry });
        }
        serde_json::from_str(&text).map_err(|e| Failure {
            message: format!(
                "HTTP {status} with a body that is not JSON ({e}): {}",
                snippet(&text)
            ),
            retry: true,
        })
    }
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t:?})"),
        ureq::Error::Io(io) => format!("connection error: {io}"),
        other => other.to_string(),
    }
}

/// The start of a response body, for error messages.
fn snippet(text: &str) -> String {
    let t = text.trim();
    if t.is_empty() {
        return "(empty body)".into();
    }
    let mut s: String = t.chars().take(300).collect();
    if s.len() < t.len() {
        s.push_str("...");
    }
    s
}
