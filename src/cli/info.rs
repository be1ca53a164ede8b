//! `pgsrm info`: version, threads, CUDA, asset caches; with `--model`, what that model is.

use anyhow::Result;
use pgsrm::assets::{ASSETS, Locations};
use pgsrm::model::spec::{Model, load_model};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Also load this model and describe it: a folder, a Hugging Face name, or random:<config>[:seed]
    #[arg(long)]
    model: Option<String>,
}

/// Whether the CUDA driver library loads, and the devices it reports. Loading is dynamic, so this
/// works (and says "not found") on machines without CUDA.
fn cuda() -> Value {
    // SAFETY: only tries to open the shared library; nothing from it is called.
    let present = unsafe { cudarc::driver::sys::is_culib_present() };
    if !present {
        return json!({"driver": false, "devices": []});
    }
    // The driver calls panic in cudarc if a symbol is missing (a broken install); report that as an
    // error instead of crashing `info`.
    let probe = std::panic::catch_unwind(|| -> Result<Vec<String>, String> {
        cudarc::driver::result::init().map_err(|e| format!("{e:?}"))?;
        let n = cudarc::driver::result::device::get_count().map_err(|e| format!("{e:?}"))?;
        (0..n)
            .map(|i| {
                let d = cudarc::driver::result::device::get(i).map_err(|e| format!("{e:?}"))?;
                cudarc::driver::result::device::get_name(d).map_err(|e| format!("{e:?}"))
            })
            .collect()
    });
    match probe {
        Ok(Ok(names)) => json!({"driver": true, "devices": names}),
        Ok(Err(e)) => json!({"driver": true, "devices": [], "error": e}),
        Err(_) => {
            json!({"driver": true, "devices": [], "error": "the driver library is incomplete"})
        }
    }
}

/// Whether `--device emu` can build its libraries: the C++ compiler it would use.
fn emulated_device() -> Value {
    match pgsrm::cuda::device::emu::compile::Compiler::find() {
        Ok(c) => json!({"compiler": c.program, "version": c.version,
                        "cache": pgsrm::cuda::device::emu::compile::cache_dir().display().to_string()}),
        Err(e) => json!({"error": format!("{e:#}")}),
    }
}

pub fn run(args: Args) -> Result<()> {
    let loc = Locations::from_env();
    // The model loads first, so that an asset it fetches shows in the list below.
    let mut model = Value::Null;
    if let Some(spec) = &args.model {
        let loaded = load_model(spec)?;
        let config = match &loaded.model {
            Model::Gpt2(m) => serde_json::to_value(&m.config)?,
            Model::Llama(m) => m.config.to_hf_json(),
        };
        model = json!({
            "spec": spec,
            "source": loaded.source,
            "family": loaded.model.family(),
            "parameters": loaded.model.num_params(),
            "config": config,
            "tokenizer_vocab": loaded.tokenizer.vocab_size(),
            "eos_id": loaded.eos,
            "chat_template": loaded.chat_template.is_some(),
        });
    }
    info_inner(args, loc, model)
}

fn info_inner(args: Args, loc: Locations, model: Value) -> Result<()> {
    let assets: Vec<Value> = ASSETS
        .iter()
        .map(|a| {
            let mut tried = Vec::new();
            let found = loc.find_local(a, &mut tried);
            json!({"name": a.name, "path": found.map(|p| p.display().to_string())})
        })
        .collect();
    let mut info = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "threads": rayon::current_num_threads(),
        "cuda": cuda(),
        "emulated_device": emulated_device(),
        "cache": loc.cache.display().to_string(),
        "hf_caches": loc.hf_hubs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "hf_endpoint": loc.hf_endpoint,
        "assets": assets,
    });
    if !model.is_null() {
        info["model"] = model;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("pgsrm {}", info["version"].as_str().unwrap_or_default());
    println!("threads: {} (rayon)", info["threads"]);
    let cuda = &info["cuda"];
    if cuda["driver"] == json!(true) {
        let devices: Vec<&str> = cuda["devices"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match cuda.get("error") {
            Some(e) => println!(
                "cuda: driver found, but: {}",
                e.as_str().unwrap_or_default()
            ),
            None => println!(
                "cuda: driver found, {} device(s) {}",
                devices.len(),
                devices.join(", ")
            ),
        }
    } else {
        println!("cuda: no driver library (libcuda) could be loaded; the CPU backend is used");
    }
    let emu = &info["emulated_device"];
    match emu.get("error") {
        Some(e) => println!(
            "emulated device: unavailable: {}",
            e.as_str().unwrap_or_default()
        ),
        None => println!(
            "emulated device (--device emu): built by {} ({}), libraries in {}",
            emu["compiler"].as_str().unwrap_or_default(),
            emu["version"].as_str().unwrap_or_default(),
            emu["cache"].as_str().unwrap_or_default()
        ),
    }
    println!(
        "asset cache: {} (set PGSRM_HOME to change)",
        loc.cache.display()
    );
    for p in &loc.hf_hubs {
        println!("hugging face cache: {}", p.display());
    }
    match &loc.hf_endpoint {
        Some(e) => println!("hugging face hub: {e}"),
        None => println!("hugging face hub: none (HF_ENDPOINT is not set)"),
    }
    for a in info["assets"].as_array().into_iter().flatten() {
        let name = a["name"].as_str().unwrap_or_default();
        match a["path"].as_str() {
            Some(p) => println!("asset {name}: {p}"),
            None => println!("asset {name}: not fetched yet (fetched on first use)"),
        }
    }
    if let Some(m) = info.get("model") {
        println!("model: {}", m["spec"].as_str().unwrap_or_default());
        println!("  source: {}", m["source"].as_str().unwrap_or_default());
        println!(
            "  family: {}, {} parameters",
            m["family"].as_str().unwrap_or_default(),
            m["parameters"]
        );
        println!("  config: {}", m["config"]);
        println!(
            "  tokenizer: {} tokens, eos id {}",
            m["tokenizer_vocab"], m["eos_id"]
        );
    }
    Ok(())
}
