"""The Sacred experiment and every configuration of mamol (``config.py`` at the repository root re-exports it).

The Sacred layer lives here and in ``run.py`` only: ``mamol.train`` turns the config into typed settings
(``mamol.settings``) once. Keys and meanings follow DCP/MMP so their command lines keep working; the
framework's own keys follow. Every default is stated once: the keys every run reads in the root config
below; a method's keys beside the method (its ``Options`` dataclass, :mod:`mamol.methods.options`); an
image–text dataset's head size and fine-tuning values in its catalogue entry (:mod:`mamol.data.catalogue`).
Named configs only set keys; a key left ``None`` takes the paper's value for the data kind (stated in the
method's file). ``python run.py print_config with remote`` shows the resolved values with their meaning;
unknown keys are refused.
"""
from __future__ import annotations

from docopt import docopt
from sacred import SETTINGS, Experiment  # importing sacred warns about pkg_resources: quieted in mamol/__init__.py
from sacred.arg_parser import get_config_updates
from sacred.config.config_dict import ConfigDict
from sacred.config.config_summary import ConfigSummary
from sacred.config.utils import dogmatize, recursive_fill_in, undogmatize

from mamol.data.catalogue import natural_entries
from mamol.methods import METHODS
from mamol.methods.options import config_keys

SETTINGS.CAPTURE_MODE = "no"  # the terminal (progress bar) stays untouched; observers get console.log instead
ex = Experiment("MaMOL", save_git_info=False)


@ex.config
def config():
    # ---------------------------------------------------------------- run
    exp_name = "mamol"  # run folder name: <log_dir>/<exp_name>/version_<n>/
    seed = 0  # seeds Lightning (seed_everything(seed, workers=True)), hence init and shuffling
    datasets = ["houston2013"]  # task names; Arrow files <name>_{train,val,test}.arrow under data_root
    # loss weight per task (as DCP); "remote" covers any remote scene; image-text tasks from the catalogue
    loss_names = {"remote": 1, **{entry.name: 0 for entry in natural_entries()}}
    log_dir = "result"  # root of run folders (checkpoints, CSV logs, test_results.json)
    fast_dev_run = False  # Lightning smoke run: one train/val/test batch, no checkpoints or logs

    # ---------------------------------------------------------------- data
    data_root = ""  # folder holding the Arrow files written by datasets/make_arrow.py
    # DataLoader workers per process (each memory-maps the Arrow files itself); None = the CPUs this process may
    # use, shared by the processes of the node, one left for each process itself, at most 8
    num_workers = None
    modalities = None  # remote: modalities to use, e.g. ["hsi", "lidar", "sar"]; None = hsi + lidar
    image_size = 224  # natural data: CLIP input side (pixels)
    max_text_len = 77  # natural data: CLIP context length (tokens); longer texts are truncated
    # <task>_class_num (head size of each image-text task, e.g. mmimdb_class_num = 23): from the catalogue, below

    # ---------------------------------------------------------------- missing modalities (SPEC §4)
    missing_ratio = {"train": 0.7, "val": 0.7, "test": 0.7}  # fraction of samples with a modality missing
    # modality name ("hsi", "lidar", "sar", "text", ...), "both", a 3-modality pair ("hsi_sar") or all of them
    # ("hsi_lidar_sar"); the release's spellings (HS, LiDAR, Both, HS_Lidar, HS_SAR_Lidar) are accepted too
    missing_type = {"train": "both", "val": "both", "test": "both"}
    both_ratio = 0.5  # with "both": fraction of the missing samples that lose the second modality
    missing_ratio_2 = 0.0  # 3-modality pair types (e.g. hsi_sar): fraction that also loses the second one
    missing_table_root = None  # where missing tables are stored and reused; None = <data_root>/missing_tables
    missing_seed = 0  # seed of the dedicated generator that draws missing tables
    missing_table_on_mismatch = "regenerate"  # a stored table made with other parameters: "regenerate" or "refuse"
    test_ratio = None  # overrides missing_ratio of val and test (e.g. 0.7); None keeps missing_ratio
    test_type = None  # overrides missing_type of val and test (e.g. "both", "hsi", "lidar"); None keeps it
    simulate_missing = False  # redraw a random missing pattern for complete training samples at each access
    missing_fill = "ones"  # input substituted for a missing modality: "ones" (release) or "zeros"

    # ---------------------------------------------------------------- backbone (SPEC §5.1)
    vit = "ViT-B/16"  # CLIP backbone: "ViT-B/16" (OpenAI layout, QuickGELU) or "tiny" (tests, demo)
    clip_weights = None  # local CLIP weights: OpenAI JIT .pt or open_clip .bin/.pt/.safetensors
    clip_random_init = False  # random backbone weights; only for tests and the demo

    # ---------------------------------------------------------------- method and shared model parts
    method = "mamol"  # what trains in the frozen encoder: mamol, linear_probe, lora, moe_lora, mmp, dcp, specialists
    tokenizer_dim = 256  # remote tokenizers: width of the 3x3 conv before the 1x1 conv to D
    head_init_std = 0.02  # std of the classification head's weight init (bias 0)
    skip_missing = True  # skip the encoder pass of missing modalities (exact; 1.6x faster at 0.7 / both)
    # trainable-parameter budget: "default" (the method's own sizes), "matched" (the method's capacity key, e.g.
    # lora_rank or prompt_length, set so its trainable parameters are within 5 % of MaMOL's on the same data) or
    # "lora" (the same, to plain LoRA's count: MaMOL scaled down); mamol/methods/budget.py, docs/rivals.md
    budget = "default"

    # the method's own keys (adapter_rank, top_k, lora_rank, prompt_length, ...) are declared beside it in
    # mamol/methods/<method>.py and added below; `python run.py print_config` lists them with their meaning

    # ---------------------------------------------------------------- optimisation (SPEC §6)
    optim_type = "adamw"  # AdamW, betas (0.9, 0.98), eps 1e-8
    learning_rate = 1e-4  # peak learning rate
    weight_decay = 0.02  # AdamW decay; never applied to biases, norms and embeddings of patterns
    lr_mult = 1  # learning-rate multiplier of the classification head(s)
    warmup_steps = 0.1  # linear warm-up: steps (int) or fraction of all optimiser steps (float < 1)
    decay_power = 1  # polynomial decay power after warm-up (1 = linear), or "cosine"
    end_lr = 0  # learning rate reached at the last step
    grad_clip = 1.0  # gradient-norm clipping (0 = off)
    max_epoch = 201  # training epochs
    max_steps = None  # optimiser steps; None = limited by max_epoch only
    batch_size = 128  # effective batch; accumulation = batch_size // (per_gpu_batchsize * gpus * nodes)
    per_gpu_batchsize = 0  # batch per device and step; 0 = batch_size split over the devices
    val_check_interval = 1.0  # validate every fraction of an epoch (float) or every N batches (int > 1)
    check_val_every_n_epoch = 1  # validate every N epochs (the release: 20 on remote data, see `remote`)

    # ---------------------------------------------------------------- hardware
    num_gpus = 1  # GPUs per node; 0 = the CPU (asking for GPUs that are not there is an error)
    num_processes = 1  # CPU processes per node when num_gpus=0 (DDP over gloo when > 1)
    num_nodes = 1  # nodes; more than one process in all runs DDP (torchrun / SLURM set these themselves)
    precision = 16  # 16 = fp16 mixed on GPU (32-bit on the CPU), "bf16" = bf16 mixed (GPU or CPU), 32 = full

    # ---------------------------------------------------------------- checkpoints and evaluation
    load_path = ""  # weights to start from or to test: Lightning .ckpt or plain state-dict .pt
    resume_from = ""  # Lightning .ckpt to resume training from (optimizer, schedule, epoch)
    test_only = False  # evaluate load_path on the test split and write test_results.json
    test_after_fit = True  # a training run ends by testing its best checkpoint
    limit_test = 1.0  # test on a fraction of the test split (<= 1.0) or on its first N batches (> 1)
    # load_path / resume_from whose output-changing options (top_k, modality_gate, missing_fill, ...) differ from
    # this run's are refused; True evaluates the weights under this run's options and records the differences
    allow_option_change = False
    debug = False  # run.py: show the full traceback of a project error instead of the one-line message
    # Sacred observers (run.py -F <folder> / -s <url>, docs/observers.md): store the Arrow files a run reads as Sacred
    # resources (copied once per md5 hash into the observer's store); False records only their paths and md5 hashes
    observer_resources = True

    # ---------------------------------------------------------------- experiments (run.py commands, README)
    logger = "csv"  # training curves: "csv" (metrics.csv) or "tensorboard" (also TensorBoard event files there)
    grid_types = None  # evaluate_grid: missing types, e.g. ["hsi","lidar"]; None = each modality + both (or pairs, all)
    grid_ratios = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # evaluate_grid: ratios (0 = complete)
    seeds = [0, 1, 2]  # sweep: one run per seed and method (reports give mean ± std over seeds)
    methods = ["mamol"]  # sweep: method names or variants {"name": "r4", "method": "mamol", "adapter_rank": 4}
    sweep_datasets = None  # sweep: `datasets` values trained in turn, e.g. [["trento"], ["augsburg"]]; None = datasets
    sweep_train_missing = None  # sweep: e.g. [{"ratio": 0.7, "type": "both"}]; None = missing_ratio/type of train
    # sweep: a sweep folder whose runs were made under another config (any key but the sweep's axes and those in
    # mamol/runs.py RESULT_NEUTRAL_KEYS) is refused; True renames it <exp_name>.replaced-<n> and starts a new sweep
    sweep_new = False
    sweep_grid = True  # sweep: evaluate each trained checkpoint over grid_types x grid_ratios (the report's curves)
    # sweep: where runs train: "serial" (one after another here), "local" (max_parallel processes here) or "slurm"
    # (one SLURM job per run, a job array through submitit; GPUs per run = num_gpus x num_nodes)
    launcher = "serial"
    max_parallel = 2  # sweep, launcher=local: runs at once
    cpu_threads = None  # torch threads of each run (any launcher; the same value gives the same numbers); None = all
    slurm_partition = None  # launcher=slurm: partition (None = the cluster's default)
    slurm_account = None  # launcher=slurm: account to charge (None = yours by default)
    slurm_time = 240  # launcher=slurm: minutes per job; a run cut by it is requeued and resumes from last.ckpt
    slurm_cpus_per_run = None  # launcher=slurm: CPUs per run (None = the cluster's default)
    slurm_mem_gb = None  # launcher=slurm: memory per node of a run in GiB (None = the cluster's default)
    slurm_array_parallelism = 64  # launcher=slurm: most runs of the job array at once (the array throttle)
    slurm_extra = []  # launcher=slurm: more #SBATCH lines, e.g. ["--qos=high", "--constraint=a100"]
    sweep_wait = True  # sweep, launcher=slurm: wait for the jobs, then report; False = submit and return
    dry_run = False  # sweep: list the runs and estimate device hours (mamol/plans.py); reads no data, trains nothing
    plan_step_seconds = {}  # dry_run: declared seconds per optimiser step by "label/dataset", "label" or "*"
    plan_measure_batch = 16  # dry_run: rows of a measured step (undeclared costs; scaled linearly to the batch)
    report_dirs = []  # report: run or sweep folders to aggregate (searched for test_results.json and grid.json)
    report_reference = None  # report, sweep: the method the others are tested against (None = mamol, else the first)
    # report, sweep: the test settings of the paper tables (report.md, report.tex): "compact" = complete data, each
    # modality missing from every test sample (ratio 1) and the mixed type at the training ratio; "all" = every
    # evaluated setting; or a list such as ["complete", "hsi 1", "both 0.7"] (the full grid is always in report.csv)
    report_settings = "compact"
    report_label = None  # report, sweep: prefix of report.tex's \label{}s (tab:<prefix>:...); None = the folder's name
    map_pixels = "labelled"  # predict_map: "labelled" pixels of the scene, or "all" pixels
    map_missing = None  # predict_map: one map each, "none" or missing modalities ("hsi"); None = none + each alone


# The paper's remote-sensing protocol (SPEC §5.3, §6): the root config above holds its values (Houston2013,
# HSI + LiDAR, 0.7 / both, AdamW 1e-4, 201 epochs, batch 128); the release validates every 20 epochs.
ex.add_named_config("remote", dict(check_val_every_n_epoch=20))
# Three modalities (Augsburg HSI + LiDAR/DSM + SAR); each missing sample draws one of the six partial patterns.
ex.add_named_config("remote_3modality", dict(
    check_val_every_n_epoch=20,
    datasets=["augsburg"],
    modalities=["hsi", "lidar", "sar"],
    missing_type={"train": "hsi_lidar_sar", "val": "hsi_lidar_sar", "test": "hsi_lidar_sar"},
))


# Plans, one per table of a paper (mamol/plans.py): `python run.py sweep with plan_remote_main data_root=...`.
_SCENES = [["houston2013"], ["trento"], ["augsburg"]]
_TEN_SEEDS = list(range(10))
ex.add_named_config("plan_remote_main", dict(
    check_val_every_n_epoch=20, exp_name="remote_main", methods=list(METHODS), seeds=_TEN_SEEDS,
    sweep_datasets=_SCENES))
ex.add_named_config("plan_natural_main", dict(
    exp_name="natural_main", methods=list(METHODS), seeds=_TEN_SEEDS, datasets=[natural_entries()[0].name],
    sweep_datasets=[[e.name] for e in natural_entries()], loss_names={e.name: 1 for e in natural_entries()},
    learning_rate=1e-2, max_epoch=20, batch_size=256, val_check_interval=0.2))
ex.add_named_config("plan_ablation", dict(
    check_val_every_n_epoch=20, exp_name="ablation", seeds=_TEN_SEEDS, sweep_datasets=_SCENES, methods=[
        "mamol",
        {"name": "no_dynamic", "method": "mamol", "use_dynamic_experts": False},
        {"name": "no_shared", "method": "mamol", "use_shared_experts": False},
        {"name": "no_modality", "method": "mamol", "use_modality_experts": False},
        {"name": "router_without_pattern", "method": "mamol", "router_uses_pattern": False},
    ]))
ex.add_named_config("plan_missing_ratio", dict(
    check_val_every_n_epoch=20, exp_name="missing_ratio", methods=list(METHODS), seeds=_TEN_SEEDS,
    sweep_train_missing=[{"ratio": r, "type": "both"} for r in (0.1, 0.3, 0.5, 0.7, 0.9)],
    grid_types=["both"], grid_ratios=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]))
# Matched budgets (docs/rivals.md): each scalable baseline at MaMOL's trainable parameters on each scene (the capacity
# is settled per scene), beside MaMOL and plain LoRA; DCP in the release's variant, whose reference variant's fixed
# projections and attentions already exceed MaMOL's count.
ex.add_named_config("plan_matched", dict(
    check_val_every_n_epoch=20, exp_name="matched", seeds=_TEN_SEEDS, sweep_datasets=_SCENES, methods=[
        "mamol", "lora",
        {"name": "lora_matched", "method": "lora", "budget": "matched"},
        {"name": "moe_lora_matched", "method": "moe_lora", "budget": "matched"},
        {"name": "mmp_matched", "method": "mmp", "budget": "matched"},
        {"name": "dcp_release_matched", "method": "dcp", "dcp_variant": "release", "budget": "matched"},
    ]))
ex.add_named_config("plan_cross", dict(
    check_val_every_n_epoch=20, exp_name="cross", methods=["mamol", "lora"], seeds=_TEN_SEEDS,
    sweep_train_missing=[{"ratio": 0.0, "type": "both"}, {"ratio": 0.7, "type": "hsi"},
                         {"ratio": 0.7, "type": "lidar"}, {"ratio": 0.7, "type": "both"}],
    grid_types=["hsi", "lidar", "both"], grid_ratios=[0.0, 0.7]))


class DocumentedConfig(ConfigDict):
    """Config keys given as a dict with a meaning per key, which ``print_config`` shows like a comment."""

    def __init__(self, values: dict, docs: dict[str, str]) -> None:
        super().__init__(values)
        self.docs = dict(docs)

    def __call__(self, fixed=None, preset=None, fallback=None) -> ConfigSummary:
        result = dogmatize(fixed or {})
        recursive_fill_in(result, self._conf)
        recursive_fill_in(result, preset or {})
        summary = ConfigSummary(result.revelation(), result.modified, result.typechanges, docs=self.docs)
        summary.update(undogmatize(result))
        return summary


def _dataset_keys() -> tuple[dict, dict[str, str]]:
    """DCP's ``<task>_class_num`` key of every image–text dataset of the catalogue, with its meaning."""
    values = {f"{e.name}_class_num": e.class_num for e in natural_entries()}
    docs = {f"{e.name}_class_num": f"{e.title}: head size ({e.class_doc})" for e in natural_entries()}
    return values, docs


ex.configurations.append(DocumentedConfig(*config_keys(cls.Options for cls in METHODS.values())))
ex.configurations.append(DocumentedConfig(*_dataset_keys()))


def _natural(task: str, val_check: float) -> dict:
    """DCP's fine-tuning values for one image-text task (adapter sizes: the paper's image-text values)."""
    return dict(datasets=[task], loss_names={task: 1}, learning_rate=1e-2, max_epoch=20, batch_size=256,
                val_check_interval=val_check)


for _entry in natural_entries():  # task_finetune_mmimdb, task_finetune_food101, task_finetune_hatememes
    ex.add_named_config(f"task_finetune_{_entry.name}", _natural(_entry.name, _entry.val_check_interval))


def root_config() -> dict:
    """Every key's default: the root config, the methods' keys and the datasets' keys."""
    cfg: dict = {}
    for configuration in ex.configurations:
        cfg.update(configuration(preset=cfg))
    return cfg


def defaults(*named_configs: str, **updates) -> dict:
    """The config ``python run.py with <named_configs...> key=value...`` would run with, without running it.

    Root values, then each named config, then ``updates`` (dict values merge key by key, as Sacred does).
    For tests and in-process tools (the model benchmark), so they share the one place defaults live.
    """
    cfg = root_config()
    for name in named_configs:
        if name not in ex.named_configs:
            raise KeyError(f"no named config {name!r}; known: {sorted(ex.named_configs)}")
        _merge(cfg, dict(ex.named_configs[name]()))
    _merge(cfg, updates)
    return cfg


def _merge(base: dict, changes: dict) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value


def parse_command_line(argv: list[str]) -> tuple[dict, list[str], bool]:
    """(config updates, named configs, debug) of a ``run.py`` command line, parsed as Sacred parses it."""
    _, _, internal_usage = ex.get_usage()
    args = docopt(internal_usage, [str(a) for a in argv[1:]], default_help=False)
    updates, named = get_config_updates(args["UPDATE"])
    return updates, list(named), bool(updates.get("debug") or args.get("--debug"))
