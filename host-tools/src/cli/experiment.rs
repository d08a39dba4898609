//! `classmod experiment`

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use classmod_host::dataset::ImageSet;
use classmod_host::dataset::{ImageShape, Split};
use classmod_host::decompose::compact::CompactOptions;
use classmod_host::decompose::{self, DecomposeOptions, HeadKind};
use classmod_host::experiment::cost::{self, CostOptions};
use classmod_host::experiment::{reuse, tradeoff};
use classmod_host::progress;
use classmod_runtime::host::ModelFile;

use super::{at_least_one_golden, load_data, model_error, print_json, read_model, PathContext};
use classmod_runtime::Device;

#[derive(clap::Subcommand)]
pub enum Experiment {
    /// Nodes kept vs composed accuracy over keep/tangle rates and both heads.
    Tradeoff(TradeoffArgs),
    /// Compact modules: trunk depth x branch width against composed accuracy and a class's cost.
    CompactTradeoff(CompactTradeoffArgs),
    /// Intra-model reuse: all two-class subsets and sampled five-class subsets.
    Reuse(ReuseArgs),
    /// Inter-model replace: each class's module taken from another model.
    Replace(ReplaceArgs),
    /// Decomposition against training from scratch: wall time, CPU time, energy estimate.
    Cost(CostArgs),
    /// The device runtime against the monolithic base: open/verify/map, cold load of k classes,
    /// swap, classification latency and resident memory against the number of loaded classes.
    Serving(ServingArgs),
    /// "None of the loaded classes": for every 3- and 5-class subset, the share of the other
    /// classes' test images rejected, per module kind and for the restricted base's max softmax.
    OpenSet(OpenSetArgs),
    /// Replace by transplant: another model's classes distilled onto this model's trunk as
    /// compact modules, each swapped in for this model's own.
    Transplant(TransplantArgs),
    /// The paper's RQ1: every packed directory's modules composed against their base (top-1,
    /// top-5, per class, a chart), beside the paper's published rows.
    Rq1(Rq1Args),
}

/// Packed directories of whole bases, scored on their test split (`open-set`, `rq1`).
#[derive(clap::Args)]
pub struct PackedOnTestArgs {
    /// Packed directories, each a module for every class of one base (as `decompose` writes
    /// them; any kind); one row (per subset size) each.
    #[arg(long, num_args = 1.., required = true)]
    packed: Vec<PathBuf>,
    /// The bases' dataset (its test split is scored).
    #[arg(long)]
    data: PathBuf,
    /// Test images (seeded class-balanced sample); default all.
    #[arg(long, value_parser = super::at_least_one())]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl PackedOnTestArgs {
    /// Each directory with its composition and its base's test images.
    fn each(&self) -> impl Iterator<Item = Result<(&PathBuf, classmod_host::compose_eval::Composition, ImageSet)>> {
        self.packed.iter().map(|dir| packed_with_test(dir, &self.data, self.limit, self.seed).map(|(c, t)| (dir, c, t)))
    }

    /// These flags as a report's command line gives them.
    fn flags(&self) -> String {
        format!(
            "--packed {} --data {}{}",
            self.packed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "),
            self.data.display(),
            self.limit.map_or(String::new(), |n| format!(" --limit {n}"))
        )
    }
}

#[derive(clap::Args)]
pub struct Rq1Args {
    #[command(flatten)]
    scored: PackedOnTestArgs,
    /// Where rq1.md, rq1.json and rq1-per-class.svg go.
    #[arg(long)]
    out: PathBuf,
    /// Show the paper's published rows for this dataset beside ours.
    #[arg(long, value_enum)]
    paper: Option<classmod_host::experiment::rq1::Paper>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct TransplantArgs {
    /// The model whose trunk the modules share (model A).
    #[arg(long)]
    model: PathBuf,
    /// The model whose classes are transplanted (model B: the same classes and image shape).
    #[arg(long)]
    with: PathBuf,
    /// The models' dataset: `train` trains the branches, `test` scores them.
    #[arg(long)]
    data: PathBuf,
    /// Model A's own compact modules, packed (a module for every class of it, as `decompose`
    /// writes them), instead of decomposing it here.
    #[arg(long)]
    own: Option<PathBuf>,
    /// Transplant a seeded sample of this many of B's classes (default all: each costs a branch).
    #[arg(long)]
    class_sample: Option<usize>,
    /// Where transplant.md and transplant.json go.
    #[arg(long)]
    out: PathBuf,
    /// Passes over the cached training images.
    #[arg(long, default_value_t = decompose::compact::EPOCHS, value_parser = super::at_least_one())]
    epochs: usize,
    /// At most this many training images (a class-balanced sample; default all).
    #[arg(long)]
    max_images: Option<usize>,
    /// Training images held out to calibrate the modules' scores [default: as `decompose`: 2,000,
    /// or 20 a class for a base of more than 100 classes].
    #[arg(long)]
    held_out: Option<usize>,
    /// Test images (seeded class-balanced sample); default all.
    #[arg(long, value_parser = super::at_least_one())]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct OpenSetArgs {
    #[command(flatten)]
    scored: PackedOnTestArgs,
    /// Where open-set.md and open-set.json go.
    #[arg(long)]
    out: PathBuf,
    /// Subset sizes (classes loaded); every subset of each size is measured, up to `--subsets`.
    #[arg(long, value_delimiter = ',', default_value = "3,5", value_parser = super::at_least_one())]
    sizes: Vec<usize>,
    /// At most this many subsets of each size: where there are more (5 of 200 classes: 2.5
    /// billion), a seeded sample of distinct ones, the same for every method.
    #[arg(long, default_value_t = 1000)]
    subsets: usize,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ServingArgs {
    #[arg(long)]
    model: PathBuf,
    /// The model's dataset: `train` for decomposition, `test` for the images classified.
    #[arg(long)]
    data: PathBuf,
    /// Where serving.md, serving.json, serving-latency.svg and serving-memory.svg go.
    #[arg(long)]
    out: PathBuf,
    /// Batch sizes whose latency is measured.
    #[arg(long, value_delimiter = ',', default_value = "1,64", value_parser = super::batch_size())]
    batches: Vec<usize>,
    /// Timed classifications per number of classes and batch size.
    #[arg(long, default_value_t = 15, value_parser = super::at_least_one())]
    iters: usize,
    #[arg(long, default_value_t = 3)]
    cold_starts: usize,
    /// Numbers of loaded classes whose latency is timed, comma-separated (memory and cold loads
    /// are measured at every k) [default: every k up to 20 classes; beyond, 1, 2, 5, 10, 20, 50,
    /// 100, ... and all of them].
    #[arg(long, value_delimiter = ',')]
    timed: Option<Vec<usize>>,
    /// Golden self-test images per module.
    /// At least one: a module without golden vectors cannot be health-checked on the device.
    #[arg(long, default_value_t = 8, value_parser = at_least_one_golden())]
    golden: usize,
    #[arg(long, default_value_t = 100)]
    n_pos: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The kinds of modules `--model` is decomposed into for the run: `mask` (default rates,
    /// channel head) and/or `compact` (the defaults of `decompose --kind compact`: the whole
    /// training split, minutes). Two kinds (`--kind mask,compact`) are measured in turn and
    /// compared in one table and one pair of charts.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mask")]
    kind: Vec<super::KindArg>,
    /// Measure these packed directories (`classmod decompose` or `pack` output, any module
    /// kind, read unverified) instead of decomposing `--model` for the run; several are
    /// measured in turn and compared.
    #[arg(long, num_args = 1.., conflicts_with = "kind")]
    packed: Vec<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// Flags shared by the reuse and replace experiments.
#[derive(clap::Args)]
pub struct ModuleExperimentArgs {
    /// The model's dataset: `train` for decomposition, `test` for scoring.
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Test images (seeded class-balanced sample); default all.
    #[arg(long, value_parser = super::at_least_one())]
    limit: Option<usize>,
    #[arg(long, value_enum, default_value = "calibrated")]
    head: super::HeadArg,
    #[arg(long, default_value_t = decompose::KEEP_RATE)]
    keep_rate: f64,
    #[arg(long, default_value_t = decompose::TANGLE_RATE)]
    tangle_rate: f64,
    #[arg(long, default_value_t = decompose::N_POS)]
    n_pos: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

impl ModuleExperimentArgs {
    fn options(&self) -> DecomposeOptions {
        DecomposeOptions {
            keep_rate: self.keep_rate,
            tangle_rate: self.tangle_rate,
            ..DecomposeOptions::with_default_rates(self.n_pos, self.head.into(), None, self.seed)
        }
    }
}

#[derive(clap::Args)]
pub struct ReuseArgs {
    /// The model decomposed (into mask modules, with the flags below) for the run.
    #[arg(long, required_unless_present = "packed")]
    model: Option<PathBuf>,
    /// Reuse these packed modules instead (any kind, a module for every class of one base, as
    /// `decompose` writes them); `--model` and the decomposition flags are then not used.
    #[arg(long, conflicts_with = "model")]
    packed: Option<PathBuf>,
    /// How many seeded five-class subsets.
    #[arg(long, default_value_t = 30)]
    fives: usize,
    /// At most this many two-class subsets: every pair while there are no more (20 classes have
    /// 190), else a seeded sample of distinct pairs (200 classes have 19,900).
    #[arg(long, default_value_t = reuse::PAIRS)]
    pairs: usize,
    /// Also hold every pair of this many seeded classes against a model of the pair alone (the
    /// paper's baseline), each trained with `--train-flags` (with `--packed`).
    #[arg(long, requires = "train_flags", requires = "packed")]
    trained_pairs: Option<usize>,
    /// `classmod train` flags for those pair models, e.g. "--init resnet56-cifar100.safetensors
    /// --freeze-stages 2 --epochs 20" (split at spaces; --data, --out, --classes are set here:
    /// the models go to OUT/pair-models/).
    #[arg(long, allow_hyphen_values = true)]
    train_flags: Option<String>,
    #[command(flatten)]
    common: ModuleExperimentArgs,
}

#[derive(clap::Args)]
pub struct ReplaceArgs {
    /// The model whose modules are replaced.
    #[arg(long)]
    model: PathBuf,
    /// The model the replacements come from (same classes and input spec).
    #[arg(long)]
    with: PathBuf,
    #[command(flatten)]
    common: ModuleExperimentArgs,
}

#[derive(clap::Args)]
pub struct CostArgs {
    #[arg(long)]
    model: PathBuf,
    /// The modules measured: `mask` (with the decomposition flags below) or `compact` (the
    /// defaults of `decompose --kind compact`).
    #[arg(long, value_enum, default_value = "mask")]
    kind: super::KindArg,
    /// Training steps to measure; default one epoch of the training split.
    #[arg(long)]
    train_steps: Option<usize>,
    #[arg(long, default_value_t = 128, value_parser = super::batch_size())]
    batch: usize,
    /// Epochs of the standard recipe (akamaster/pytorch_resnet_cifar10: 200).
    #[arg(long, default_value_t = 200.0, value_parser = super::positive)]
    recipe_epochs: f64,
    /// Assumed power per busy core, watts: about 4.4 W of package power per core of a 64-core,
    /// 280 W server CPU, doubled for memory, board and power-supply losses.
    #[arg(long, default_value_t = 9.0, value_parser = super::positive)]
    watts_per_core: f64,
    /// Grid carbon intensity, kg CO2e per kWh (IEA world average, about 0.475).
    #[arg(long, default_value_t = 0.475)]
    kg_co2e_per_kwh: f64,
    #[command(flatten)]
    common: ModuleExperimentArgs,
}

/// Train and test splits for `model`'s input and classes.
fn splits(model: &ModelFile, data: &std::path::Path, limit: Option<usize>, seed: u64) -> Result<(ImageSet, ImageSet)> {
    let spec = &model.meta.input;
    let shape = ImageShape::from(spec);
    let names = &model.meta.class_names;
    Ok((
        load_data(data, Split::Train, shape, Some(names), None, seed)?,
        load_data(data, Split::Test, shape, Some(names), limit, seed)?,
    ))
}

fn run_transplant(a: TransplantArgs) -> Result<()> {
    use classmod_host::decompose::compact::CompactOptions;
    use classmod_host::experiment::transplant;
    let t0 = std::time::Instant::now();
    let (model, with) = (read_model(&a.model, &Device::Cpu)?, read_model(&a.with, &Device::Cpu)?);
    let (mut train, test) = splits(&model, &a.data, a.limit, a.seed)?;
    if let Some(n) = a.max_images.filter(|&n| n < train.len()) {
        train = train.balanced_sample(n, a.seed);
    }
    let k = model.meta.class_names.len();
    let sample = a.class_sample.filter(|&n| n < k).map(|n| classmod_host::experiment::subsets::one(k, n, a.seed));
    let defaults = CompactOptions::for_base(&model.meta.arch.network(), sample, a.seed);
    let opts = CompactOptions { epochs: a.epochs, held_out: a.held_out.unwrap_or(defaults.held_out), ..defaults };
    let own = match &a.own {
        Some(dir) => Some((
            dir,
            classmod_host::compose_eval::load(
                std::slice::from_ref(dir),
                &Device::Cpu,
                classmod_runtime::Precision::F32,
            )?,
        )),
        None => None,
    };
    let own_group = match &own {
        Some((dir, c)) => match c.groups() {
            [g] => Some(g),
            _ => return Err(anyhow!("{}: modules of one base, please", dir.display())),
        },
        None => None,
    };
    let pb = progress::bar(0, "compact");
    let r = transplant::transplant(&model, &with, &train, &test, &opts, own_group, &pb).map_err(|e| match &a.own {
        Some(dir) if matches!(e, classmod_host::HostError::ModulesNotOfModel { .. }) => model_error(dir, e),
        _ => model_error(&a.with, e),
    })?;
    pb.finish_and_clear();
    let command = format!(
        "classmod experiment transplant --model {} --with {} --data {} --out {}{}{}",
        a.model.display(),
        a.with.display(),
        a.data.display(),
        a.out.display(),
        a.own.as_ref().map_or(String::new(), |d| format!(" --own {}", d.display())),
        a.class_sample.map_or(String::new(), |n| format!(" --class-sample {n}"))
    );
    publish(&a.out, "transplant", &transplant::markdown(&r, &command), &r, a.json, t0.elapsed().as_secs_f64())
}

/// A packed directory of one base and one kind with a module for every class of its base, in
/// class order, and that base's test split (`limit`: a seeded class-balanced sample).
fn packed_with_test(
    dir: &std::path::Path,
    data: &std::path::Path,
    limit: Option<usize>,
    seed: u64,
) -> Result<(classmod_host::compose_eval::Composition, ImageSet)> {
    let c = classmod_host::compose_eval::load(&[dir.to_path_buf()], &Device::Cpu, classmod_runtime::Precision::F32)?;
    let [group] = c.groups() else {
        return Err(anyhow!("{}: modules of one base and one kind, please", dir.display()));
    };
    let names = group.base().class_names().to_vec();
    let in_order = group.modules().iter().enumerate().all(|(i, m)| m.class_id.0 as usize == i);
    if group.modules().len() != names.len() || !in_order {
        return Err(anyhow!("{}: a module for every class of its base ({}), please", dir.display(), names.len()));
    }
    let spec = group.base().input_spec();
    let shape = ImageShape::from(spec);
    let test = load_data(data, Split::Test, shape, Some(&names), limit, seed)?;
    Ok((c, test))
}

/// Scores every packed directory's modules once on the test split, then measures every subset.
fn run_open_set(a: OpenSetArgs) -> Result<()> {
    use classmod_host::experiment::open_set::{self, Method};
    use classmod_host::experiment::scores::ScoreTable;
    let t0 = std::time::Instant::now();
    let mut tables = Vec::new();
    for each in a.scored.each() {
        let (dir, c, test) = each?;
        let group = &c.groups()[0];
        // Open-set needs classes left out: sizes of 1 to N - 1 of the base's N (before the
        // scoring, which takes a while).
        let n = group.base().class_names().len();
        if let Some(k) = a.sizes.iter().find(|&&k| k >= n) {
            return Err(anyhow!(
                "--sizes: {k} classes loaded of the base's {n} leaves no class out; give sizes of 1 to {}",
                n - 1
            ));
        }
        let pb = progress::bar(test.len() as u64, "score");
        let table = ScoreTable::compute(group, &test, 64, &pb)?;
        pb.finish_and_clear();
        let kind = group.modules()[0].kind.name();
        let mins: Vec<Option<f32>> = group.modules().iter().map(|m| m.min_score).collect();
        tables.push((format!("{kind} modules ({})", dir.display()), table, mins, group.base().class_names().to_vec()));
    }
    let classes = tables[0].3.clone();
    let mut methods: Vec<Method> = tables
        .iter()
        .map(|(name, t, mins, _)| Method { name: name.clone(), table: t, mins: Some(mins.clone()) })
        .collect();
    methods.push(Method { name: "base max-softmax".into(), table: &tables[0].1, mins: None });
    let r = open_set::open_set(&methods, classes, &a.sizes, a.subsets, a.scored.seed);
    let command = format!("classmod experiment open-set {} --out {}", a.scored.flags(), a.out.display());
    publish(&a.out, "open-set", &open_set::markdown(&r, &command), &r, a.json, t0.elapsed().as_secs_f64())
}

/// Composes every packed directory's modules on the test split against their base.
fn run_rq1(a: Rq1Args) -> Result<()> {
    use classmod_host::compose_eval::{self, Reference};
    use classmod_host::experiment::rq1::{self, Rq1Report, Rq1Row};
    let t0 = std::time::Instant::now();
    let mut rows = Vec::new();
    for each in a.scored.each() {
        let (dir, c, test) = each?;
        let pb = progress::bar(test.len() as u64, "compose");
        let r = compose_eval::evaluate(
            &c,
            &test,
            classmod_runtime::Rule::Max,
            classmod_runtime::MinScore::Off,
            Reference::RestrictedBase,
            64,
            &pb,
        )?;
        let group = &c.groups()[0];
        let (model, kind) = (group.base().architecture().name(), group.modules()[0].kind.name().to_string());
        let row = Rq1Row::new(dir.display().to_string(), model, kind, &r)
            .ok_or_else(|| anyhow!("{}: no base figures to compare with", dir.display()))?;
        eprintln!(
            "{}: composed {:.2} / {:.2} %, base {:.2} / {:.2} % ({} images)",
            dir.display(),
            100.0 * row.composed_top1,
            100.0 * row.composed_top5,
            100.0 * row.base_top1,
            100.0 * row.base_top5,
            row.images
        );
        rows.push(row);
    }
    let r = Rq1Report { rows, paper: a.paper };
    std::fs::create_dir_all(&a.out).at(&a.out)?;
    let svg = a.out.join("rq1-per-class.svg");
    classmod_runtime::host::write_atomically(&svg, rq1::per_class_chart(&r).as_bytes()).at(&svg)?;
    let command = format!(
        "classmod experiment rq1 {} --out {}{}",
        a.scored.flags(),
        a.out.display(),
        a.paper
            .and_then(|p| clap::ValueEnum::to_possible_value(&p))
            .map_or(String::new(), |v| format!(" --paper {}", v.get_name()))
    );
    publish(&a.out, "rq1", &rq1::markdown(&r, &command), &r, a.json, t0.elapsed().as_secs_f64())
}

/// A model of `classes` alone, trained on `data` with the `classmod train` flags `flags` into
/// `dir`, scored on those classes' test images.
fn train_pair(
    flags: &str,
    data: &std::path::Path,
    dir: &std::path::Path,
    classes: &[String],
) -> Result<reuse::TrainedOn, classmod_host::HostError> {
    let options = |what: String| classmod_host::HostError::Options { what };
    std::fs::create_dir_all(dir).map_err(|e| options(format!("{}: {e}", dir.display())))?;
    let name: String = classes.join("-").chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let out = dir.join(format!("{name}.safetensors"));
    let mut argv: Vec<String> = vec!["train".into()];
    argv.extend(flags.split_whitespace().map(String::from));
    argv.extend(["--data".into(), data.display().to_string(), "--out".into(), out.display().to_string()]);
    argv.extend(["--classes".into(), classes.join(",")]);
    /// `classmod train`'s flags, parsed as the subcommand parses them.
    #[derive(clap::Parser)]
    struct TrainCommand {
        #[command(flatten)]
        args: super::train::Args,
    }
    let args = <TrainCommand as clap::Parser>::try_parse_from(&argv)
        .map_err(|e| options(format!("--train-flags: {}", e.to_string().lines().next().unwrap_or(""))))?
        .args;
    let job = args.job().map_err(|e| options(format!("--train-flags: {e}")))?;
    let o = classmod_host::train::train_and_eval(&job, progress::bar, |_| {})?;
    Ok(reuse::TrainedOn { top1: o.eval.top1, n: o.eval.n, seconds: o.seconds })
}

/// Writes `NAME.md` and `NAME.json` into `dir` and prints the Markdown.
fn publish<T: serde::Serialize>(
    dir: &std::path::Path,
    name: &str,
    md: &str,
    report: &T,
    json: bool,
    seconds: f64,
) -> Result<()> {
    std::fs::create_dir_all(dir).at(dir)?;
    let w = |ext: &str, bytes: &[u8]| {
        let p = dir.join(format!("{name}.{ext}"));
        classmod_runtime::host::write_atomically(&p, bytes).at(&p)
    };
    w("md", md.as_bytes())?;
    w("json", &serde_json::to_vec_pretty(report)?)?;
    print!("{md}");
    println!("\nwritten: {}/{name}.{{md,json}} ({seconds:.0} s)", dir.display());
    if json {
        let mut v = serde_json::to_value(report)?;
        v["seconds"] = seconds.into();
        print_json(&v);
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct TradeoffArgs {
    #[arg(long)]
    model: PathBuf,
    /// The model's dataset: `train` gives positives and negatives, `test` scores compositions.
    #[arg(long)]
    data: PathBuf,
    /// Where tradeoff.md, tradeoff.json and tradeoff.svg go.
    #[arg(long)]
    out: PathBuf,
    /// Test images (seeded class-balanced sample); default all.
    #[arg(long, value_parser = super::at_least_one())]
    limit: Option<usize>,
    /// `keep:tangle` pairs, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1.0:0.0,0.9:0.02,0.9:0.03,0.9:0.05,0.5:0.05,0.9:0.07,0.9:0.1,0.9:0.15,0.5:0.2,0.5:0.3,0.5:0.5"
    )]
    settings: Vec<String>,
    #[arg(long, value_delimiter = ',', value_enum, default_value = "channel,calibrated")]
    heads: Vec<super::HeadArg>,
    #[arg(long, default_value_t = decompose::N_POS)]
    n_pos: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct CompactTradeoffArgs {
    #[arg(long)]
    model: PathBuf,
    /// The model's dataset: `train` trains the branches, `test` scores compositions.
    #[arg(long)]
    data: PathBuf,
    /// Where compact-tradeoff.md, .json and .svg go.
    #[arg(long)]
    out: PathBuf,
    /// `trunk-stages:width` pairs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1:8,1:16,1:32,2:8,2:16,2:32")]
    settings: Vec<String>,
    /// Blocks after each branch's entry convolution [default: as `decompose --kind compact`, by
    /// the base's depth]
    #[arg(long)]
    branch_blocks: Option<usize>,
    /// Passes over the cached training images.
    #[arg(long, default_value_t = decompose::compact::EPOCHS, value_parser = super::at_least_one())]
    epochs: usize,
    /// At most this many training images (a class-balanced sample; default all).
    #[arg(long)]
    max_images: Option<usize>,
    /// Test images (seeded class-balanced sample); default all.
    #[arg(long, value_parser = super::at_least_one())]
    limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

pub fn run(e: Experiment) -> Result<()> {
    match e {
        Experiment::Tradeoff(a) => run_tradeoff(a),
        Experiment::CompactTradeoff(a) => run_compact_tradeoff(a),
        Experiment::Serving(a) => run_serving(a),
        Experiment::OpenSet(a) => run_open_set(a),
        Experiment::Transplant(a) => run_transplant(a),
        Experiment::Rq1(a) => run_rq1(a),
        Experiment::Reuse(a) => {
            let t0 = std::time::Instant::now();
            let r = match (&a.packed, &a.model) {
                (Some(dir), _) => {
                    let (c, test) = packed_with_test(dir, &a.common.data, a.common.limit, a.common.seed)?;
                    let pb = progress::bar(test.len() as u64, "score");
                    let flags = a.train_flags.clone().unwrap_or_default();
                    let models = a.common.out.join("pair-models");
                    let mut train = |classes: &[String]| train_pair(&flags, &a.common.data, &models, classes);
                    let trained = a.trained_pairs.map(|n| (n, flags.clone(), &mut train as reuse::TrainPair));
                    let r = reuse::reuse_packed(
                        &c.groups()[0],
                        dir,
                        &test,
                        (a.pairs, a.fives),
                        a.common.seed,
                        trained,
                        &pb,
                    )?;
                    pb.finish_and_clear();
                    r
                }
                (None, Some(model)) => {
                    let model = read_model(model, &Device::Cpu)?;
                    let (train, test) = splits(&model, &a.common.data, a.common.limit, a.common.seed)?;
                    let pb = progress::bar(test.len() as u64, "score");
                    let r = reuse::reuse(&model, &train, &test, &a.common.options(), (a.pairs, a.fives), &pb)?;
                    pb.finish_and_clear();
                    r
                }
                (None, None) => return Err(anyhow!("--model or --packed")),
            };
            publish(&a.common.out, "reuse", &reuse::reuse_markdown(&r), &r, a.common.json, t0.elapsed().as_secs_f64())
        }
        Experiment::Cost(a) => {
            let t0 = std::time::Instant::now();
            let model = read_model(&a.model, &Device::Cpu)?;
            let (train, _) = splits(&model, &a.common.data, Some(1), a.common.seed)?;
            let o = CostOptions {
                train_steps: a.train_steps.unwrap_or(train.len().div_ceil(a.batch)),
                batch: a.batch,
                recipe_epochs: a.recipe_epochs,
                watts_per_core: a.watts_per_core,
                kg_co2e_per_kwh: a.kg_co2e_per_kwh,
            };
            eprintln!("decomposing, then {} training steps of batch {} ...", o.train_steps, o.batch);
            let pb = progress::bar(o.train_steps as u64, "train");
            let decomposition = match a.kind {
                super::KindArg::Mask => cost::Decomposition::Mask(a.common.options()),
                super::KindArg::Compact => cost::Decomposition::Compact(CompactOptions::for_base(
                    &model.meta.arch.network(),
                    None,
                    a.common.seed,
                )),
            };
            let r = cost::run(&model, &train, &decomposition, &o, &pb)?;
            pb.finish_and_clear();
            publish(&a.common.out, "cost", &cost::markdown(&r), &r, a.common.json, t0.elapsed().as_secs_f64())
        }
        Experiment::Replace(a) => {
            let t0 = std::time::Instant::now();
            let model_a = read_model(&a.model, &Device::Cpu)?;
            let model_b = read_model(&a.with, &Device::Cpu)?;
            let (train, test) = splits(&model_a, &a.common.data, a.common.limit, a.common.seed)?;
            let pb = progress::bar(2 * test.len() as u64, "score");
            let r = reuse::replace(&model_a, &model_b, &train, &test, &a.common.options(), &pb)?;
            pb.finish_and_clear();
            publish(
                &a.common.out,
                "replace",
                &reuse::replace_markdown(&r),
                &r,
                a.common.json,
                t0.elapsed().as_secs_f64(),
            )
        }
    }
}

/// `--settings` values `a:b`, each side parsed; `form` names them in the error.
fn pairs<A: std::str::FromStr, B: std::str::FromStr>(items: &[String], form: &str) -> Result<Vec<(A, B)>> {
    items
        .iter()
        .map(|s| {
            let bad = || anyhow!("--settings: `{s}` is not {form}");
            let (a, b) = s.split_once(':').ok_or_else(bad)?;
            Ok((a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?))
        })
        .collect()
}

fn run_tradeoff(a: TradeoffArgs) -> Result<()> {
    let settings: Vec<(f64, f64)> = pairs(&a.settings, "keep:tangle")?;
    let model = read_model(&a.model, &Device::Cpu)?;
    let (train, test) = splits(&model, &a.data, a.limit, a.seed)?;
    // The sweep sets the rates and heads itself; the rest are the defaults.
    let opts = DecomposeOptions::with_default_rates(a.n_pos, HeadKind::Channel, None, a.seed);
    let pb = progress::bar((settings.len() * a.heads.len()) as u64, "settings");
    let heads: Vec<HeadKind> = a.heads.iter().map(|&h| h.into()).collect();
    let r = tradeoff::run(&model, &train, &test, &opts, &settings, &heads, &pb)?;
    pb.finish_and_clear();
    tradeoff::write(&a.out, &r).at(&a.out)?;
    print!("{}", tradeoff::markdown(&r));
    println!("\nwritten: {}/tradeoff.{{md,json,svg}}", a.out.display());
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["seconds"] =
            (r.observe_seconds + r.points.iter().map(|p| p.build_seconds + p.eval_seconds).sum::<f64>()).into();
        print_json(&v);
    }
    Ok(())
}

fn run_compact_tradeoff(a: CompactTradeoffArgs) -> Result<()> {
    use classmod_host::decompose::compact::CompactOptions;
    use classmod_host::experiment::compact_tradeoff;
    let t0 = std::time::Instant::now();
    let settings: Vec<(usize, usize)> = pairs(&a.settings, "trunk-stages:width")?;
    let model = read_model(&a.model, &Device::Cpu)?;
    let (mut train, test) = splits(&model, &a.data, a.limit, a.seed)?;
    if let Some(n) = a.max_images.filter(|&n| n < train.len()) {
        train = train.balanced_sample(n, a.seed);
    }
    let defaults = CompactOptions::for_base(&model.meta.arch.network(), None, a.seed);
    let opts = CompactOptions { blocks: a.branch_blocks.unwrap_or(defaults.blocks), epochs: a.epochs, ..defaults };
    let pb = progress::bar(0, "compact");
    let r = compact_tradeoff::run(&model, &train, &test, &opts, &settings, &pb)?;
    pb.finish_and_clear();
    compact_tradeoff::write(&a.out, &r).at(&a.out)?;
    print!("{}", compact_tradeoff::markdown(&r));
    println!("\nwritten: {}/compact-tradeoff.{{md,json,svg}}", a.out.display());
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        v["seconds"] = t0.elapsed().as_secs_f64().into();
        print_json(&v);
    }
    Ok(())
}

/// Decomposes every class into modules of `--kind` (mask: the default rates, channel head;
/// compact: `decompose --kind compact`'s defaults), packs them signed into a scratch directory,
/// and measures serving from it.
fn run_serving(a: ServingArgs) -> Result<()> {
    use classmod_host::decompose::compact::CompactOptions;
    use classmod_host::experiment::serving::{self, ServingOptions};
    use classmod_host::pack::{decompose_and_pack, decompose_compact_and_pack};
    let t0 = std::time::Instant::now();
    // Each size is 1 to 1024 already (clap's `batch_size`); none at all is still possible.
    if a.batches.is_empty() {
        return Err(anyhow!("--batches: give batch sizes of at least 1"));
    }
    let model = read_model(&a.model, &Device::Cpu)?;
    let (train, test) = splits(&model, &a.data, Some(1000), a.seed)?;
    let o = ServingOptions {
        batches: a.batches.clone(),
        iters: a.iters,
        cold_starts: a.cold_starts,
        timed: a.timed.clone(),
    };
    let mut reports = Vec::new();
    if !a.packed.is_empty() {
        drop(train);
        for dir in &a.packed {
            let pb = progress::bar(1, "measure");
            let r = serving::measure(dir, None, &test, &o, &pb).map_err(|e| model_error(dir, e));
            pb.finish_and_clear();
            reports.push(r?);
        }
        return write_serving(&a, reports, t0);
    }
    let mut kinds = a.kind.clone();
    kinds.dedup();
    let key = super::keygen::fresh_key();
    for kind in kinds {
        let packed = std::env::temp_dir().join(format!("classmod-serving-{}-{kind:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&packed);
        eprintln!(
            "decomposing {} classes into {kind:?} modules and packing them (signed) into {} ...",
            model.meta.class_names.len(),
            packed.display()
        );
        let pb = progress::bar(0, "decompose");
        if kind == super::KindArg::Compact {
            let opts = CompactOptions::for_base(&model.meta.arch.network(), None, a.seed);
            decompose_compact_and_pack(&model, &train, &test, &opts, a.golden, &packed, Some(&key), &pb)?;
        } else {
            let opts = DecomposeOptions::with_default_rates(a.n_pos, HeadKind::Channel, None, a.seed);
            decompose_and_pack(&model, &train, &test, &opts, a.golden, &packed, Some(&key), &pb)?;
        }
        pb.finish_and_clear();
        let pb = progress::bar(1, "measure"); // its length is set once the classes are known
        let r = serving::measure(&packed, Some(key.verifying_key()), &test, &o, &pb);
        pb.finish_and_clear();
        let _ = std::fs::remove_dir_all(&packed);
        let mut r = r?;
        r.dir = format!("{}, decomposed and packed for this run", a.model.display());
        reports.push(r);
    }
    write_serving(&a, reports, t0)
}

/// The serving experiment's charts, tables and JSON: one report's as it is; several reports'
/// under `reports`, with each one's `kind`, `ratio_k1` and `ratio_k10` under `compared`.
fn write_serving(
    a: &ServingArgs,
    reports: Vec<classmod_host::experiment::serving::ServingReport>,
    t0: std::time::Instant,
) -> Result<()> {
    use classmod_host::experiment::serving;
    let seconds = t0.elapsed().as_secs_f64();
    let ((latency, memory), md) = match reports.as_slice() {
        [r] => (serving::charts(r), serving::markdown(r)),
        rs => (serving::compared_charts(rs), serving::compared_markdown(rs)),
    };
    std::fs::create_dir_all(&a.out).at(&a.out)?;
    for (name, svg) in [("serving-latency.svg", latency), ("serving-memory.svg", memory)] {
        let p = a.out.join(name);
        classmod_runtime::host::write_atomically(&p, svg.as_bytes()).at(&p)?;
    }
    if let [r] = reports.as_slice() {
        return publish(&a.out, "serving", &md, r, a.json, seconds);
    }
    let compared: Vec<_> = reports
        .iter()
        .map(|r| serde_json::json!({ "kind": r.kind, "dir": r.dir, "ratio_k1": r.ratio_k1, "ratio_k10": r.ratio_k10 }))
        .collect();
    publish(&a.out, "serving", &md, &serde_json::json!({ "compared": compared, "reports": reports }), a.json, seconds)
}
