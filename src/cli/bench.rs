//! `pgsrm bench`: throughput figures as JSON lines. Criterion benches (`cargo bench`) cover the CPU
//! in detail; this command is what runs on a machine with only the binary, such as a GPU machine.

use anyhow::{Result, bail};
use pgsrm::cuda::{bench, paper_shapes};
use pgsrm::device::{Device, DeviceChoice};
use pgsrm::reward::embedder::{self, EmbedderOptions};
use pgsrm::reward::shaping::Shaping;
use pgsrm::run::update_bench::{UpdateJob, update_throughput};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Job {
    /// Batched sampling of GPT-2 (random init): new tokens per second
    Generate,
    /// Our products beside cuBLAS at the paper's shapes: every product of an update of GPT-2
    /// small and SmolLM2-135M at batch 50 and GPT-2 large at batch 10, and of decoding steps of
    /// 1, 10 and 50 rows (GPU only)
    Matmul,
    /// Whole trainer updates of a child (`--model`, `--task`, `--batch`, `--new-tokens`,
    /// `--reward`) after two warm-up updates: seconds per update and where they went
    Update,
    /// Every job
    All,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "all")]
    job: Job,
    /// Device to measure on
    #[arg(long, value_enum, default_value = "cuda")]
    device: DeviceChoice,
    /// GPT-2 config of the generation job
    #[arg(long, default_value = "small")]
    config: String,
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Prompt length in tokens
    #[arg(long, default_value_t = 20)]
    prompt: usize,
    /// New tokens per answer (generate: 10; update: the task's)
    #[arg(long)]
    new_tokens: Option<usize>,
    /// The child of the update job, as `--model` of `pgsrm train` takes it
    #[arg(long, default_value = "random:small")]
    model: String,
    /// The task of the update job
    #[arg(long, default_value = "colors")]
    task: String,
    /// The reward of the update job: binary (no embedder: the policy's work alone) or pgsrm
    /// (all-MiniLM-L6-v2 on the device)
    #[arg(long, default_value = "binary")]
    reward: String,
    /// The update job's prompts as user turns of the child's chat template
    #[arg(long)]
    chat: bool,
    /// Timed runs (the median is reported)
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// With --job matmul: time every candidate plan of each product instead (for tuning the
    /// planner), one JSON line per product with the candidates fastest first
    #[arg(long)]
    sweep: bool,
    /// With --job matmul: prompt length of the update shapes
    #[arg(long, default_value_t = 20)]
    update_prompt: usize,
}

pub fn run(args: Args) -> Result<()> {
    if args.runs == 0 || args.batch == 0 || args.prompt == 0 {
        bail!("--runs, --batch and --prompt must be at least 1");
    }
    if args.device == DeviceChoice::Emu {
        bail!(
            "--device emu: the emulated device checks kernels and is never a speed figure; \
             measure on --device cpu or --device cuda"
        );
    }
    let device = match args.device {
        DeviceChoice::Cpu => Device::Cpu,
        _ => Device::open(DeviceChoice::Cuda, 0)?,
    };
    let line = |job: &str, fig: serde_json::Value| {
        println!(
            "{}",
            serde_json::json!({"job": job, "device": device.name(), "figure": fig})
        )
    };
    if matches!(args.job, Job::Generate | Job::All) {
        let new_tokens = args.new_tokens.unwrap_or(10);
        let fig = match device.gpu() {
            Some(g) => serde_json::to_value(bench::generate_throughput(
                g,
                &args.config,
                args.batch,
                args.prompt,
                new_tokens,
                args.runs,
            )?)?,
            None => cpu_generate(&args, new_tokens)?,
        };
        line("generate", fig);
    }
    if args.job == Job::Matmul && device.gpu().is_none() {
        bail!("--job matmul compares CUDA kernels with cuBLAS: it needs --device cuda");
    }
    // Every job on the CPU leaves out the products, which only a GPU has.
    if let (Job::Matmul | Job::All, Some(g)) = (args.job, device.gpu()) {
        let products = paper_shapes::products(&[args.update_prompt], &[1, 10, 50]);
        if args.sweep {
            for fig in bench::matmul_sweep(g, &products)? {
                line("matmul-sweep", serde_json::to_value(fig)?);
            }
        } else {
            let figs = bench::matmul_vs_cublas(g, &products)?;
            for fig in &figs {
                line("matmul", serde_json::to_value(fig)?);
            }
            eprint!("{}", matmul_table(&figs));
        }
    }
    update(&args, &device, &line)
}

/// The update job, when asked for (alone or with every job).
fn update(args: &Args, device: &Device, line: &dyn Fn(&str, serde_json::Value)) -> Result<()> {
    if !matches!(args.job, Job::Update | Job::All) {
        return Ok(());
    }
    let task = pgsrm::tasks::by_name(&args.task)?;
    let job = UpdateJob {
        model: args.model.clone(),
        task: args.task.clone(),
        batch: args.batch,
        new_tokens: args.new_tokens.unwrap_or(task.settings.max_new_tokens),
        reward: args.reward.clone(),
        chat: args.chat,
        runs: args.runs,
    };
    let embedder = if Shaping::from_name(&args.reward)?.needs_embeddings() {
        let opts = EmbedderOptions {
            encoders: Some(device.encoders()),
            ..Default::default()
        };
        Some(embedder::by_name("minilm", &opts)?)
    } else {
        None
    };
    let fig = update_throughput(device, &job, embedder)?;
    line("update", serde_json::to_value(fig)?);
    Ok(())
}

/// The same generation job on the CPU backend.
fn cpu_generate(args: &Args, new_tokens: usize) -> Result<serde_json::Value> {
    use pgsrm::model::gpt2::Gpt2;
    use pgsrm::rng::Rng;
    use pgsrm::sample::SamplingParams;
    let fig = pgsrm::throughput::generate_throughput(
        &args.config,
        args.batch,
        args.prompt,
        new_tokens,
        args.runs,
        |_| {
            Ok(
                |model: &Gpt2,
                 prompts: &[Vec<u32>],
                 params: &SamplingParams,
                 eos: u32,
                 seed: u64| {
                    pgsrm::cpu::gpt2_decode::generate(
                        model,
                        prompts,
                        params,
                        eos,
                        &mut Rng::new(seed),
                    )
                    .map(|_| ())
                },
            )
        },
    )?;
    Ok(serde_json::to_value(fig)?)
}

/// The matmul figures as a table: ours, cuBLAS, their ratio, and for few rows the weight bytes
/// per second.
fn matmul_table(figs: &[bench::MatmulFigure]) -> String {
    let mut s = format!(
        "{:<44} {:<4} {:>5} {:>6} {:>6} {:<30} {:>9} {:>9} {:>6} {:>8} {:>8}\n",
        "product",
        "",
        "m",
        "n",
        "k",
        "plan",
        "ours us",
        "cuBLAS us",
        "ratio",
        "ours GB/s",
        "cuBLAS"
    );
    for f in figs {
        let gb = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.0}"));
        s.push_str(&format!(
            "{:<44} {:<4} {:>5} {:>6} {:>6} {:<30} {:>9.1} {:>9.1} {:>6.2} {:>8} {:>8}\n",
            f.what,
            f.layout,
            f.m,
            f.n,
            f.k,
            f.plan,
            f.ours_us,
            f.cublas_us,
            f.fraction_of_cublas,
            gb(f.weight_gb_per_s),
            gb(f.cublas_weight_gb_per_s)
        ));
    }
    s
}
