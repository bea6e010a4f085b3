"""Sacred experiment and every configuration of mamol.

The Sacred layer lives here and in ``run.py`` only: ``mamol.train`` turns the config into typed settings
(``mamol.settings``) once. Keys and meanings follow DCP/MMP so their command lines keep working; the
framework's own keys follow. Every default is stated once, in the root config below; named configs only set
keys; a key left ``None`` takes the paper's value for the data kind (stated in the method's file).
``python run.py print_config with remote`` shows the resolved values; unknown keys are refused by Sacred.
"""
from __future__ import annotations

import warnings

from docopt import docopt

# sacred 0.8.7 imports pkg_resources (hence setuptools<81 in requirements.txt), which warns on import.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from sacred import SETTINGS, Experiment  # noqa: E402
from sacred.arg_parser import get_config_updates  # noqa: E402

SETTINGS.CAPTURE_MODE = "no"  # no observers record output; keep Lightning's progress bar untouched
ex = Experiment("MaMOL", save_git_info=False)


@ex.config
def config():
    # ---------------------------------------------------------------- run
    exp_name = "mamol"  # run folder name: <log_dir>/<exp_name>/version_<n>/
    seed = 0  # seeds Lightning (seed_everything(seed, workers=True)), hence init and shuffling
    datasets = ["houston2013"]  # task names; Arrow files <name>_{train,val,test}.arrow under data_root
    # loss weight per task (as DCP); "remote" covers any remote scene
    loss_names = {"remote": 1, "mmimdb": 0, "food101": 0, "hatememes": 0}
    log_dir = "result"  # root of run folders (checkpoints, CSV logs, test_results.json)
    fast_dev_run = False  # Lightning smoke run: one train/val/test batch, no checkpoints or logs

    # ---------------------------------------------------------------- data
    data_root = ""  # folder holding the Arrow files written by datasets/make_arrow.py
    num_workers = 2  # DataLoader workers per device (each memory-maps the Arrow files itself)
    modalities = None  # remote: modalities to use, e.g. ["hsi", "lidar", "sar"]; None = hsi + lidar
    image_size = 224  # natural data: CLIP input side (pixels)
    max_text_len = 77  # natural data: CLIP context length (tokens); longer texts are truncated
    mmimdb_class_num = 23  # MM-IMDb genres (multi-label)
    hatememes_class_num = 2  # Hateful Memes outputs (2-way softmax)
    food101_class_num = 101  # Food-101 classes

    # ---------------------------------------------------------------- missing modalities (SPEC §4)
    missing_ratio = {"train": 0.7, "val": 0.7, "test": 0.7}  # fraction of samples with a modality missing
    missing_type = {"train": "both", "val": "both", "test": "both"}  # modality name, both, or 3-modality pair
    both_ratio = 0.5  # with "both": fraction of the missing samples that lose the second modality
    missing_ratio_2 = 0.0  # 3-modality pair types (e.g. HS_SAR): fraction that also loses the second one
    missing_table_root = None  # where missing tables are stored and reused; None = <data_root>/missing_tables
    missing_seed = 0  # seed of the dedicated generator that draws missing tables
    missing_table_on_mismatch = "regenerate"  # a stored table made with other parameters: "regenerate" or "refuse"
    test_ratio = None  # overrides missing_ratio of val and test (e.g. 0.7); None keeps missing_ratio
    test_type = None  # overrides missing_type of val and test (e.g. "both", "HS", "lidar"); None keeps it
    simulate_missing = False  # redraw a random missing pattern for complete training samples at each access
    missing_fill = "ones"  # input substituted for a missing modality: "ones" (release) or "zeros"

    # ---------------------------------------------------------------- backbone (SPEC §5.1)
    vit = "ViT-B/16"  # CLIP backbone: "ViT-B/16" (OpenAI layout, QuickGELU) or "tiny" (tests, demo)
    clip_weights = None  # local CLIP weights: OpenAI JIT .pt or open_clip .bin/.pt/.safetensors
    clip_random_init = False  # random backbone weights; only for tests and the demo

    # ---------------------------------------------------------------- method and shared model parts
    method = "mamol"  # what trains inside the frozen encoder: mamol, linear_probe, lora, moe_lora, mmp or dcp
    tokenizer_dim = 256  # remote tokenizers: width of the 3x3 conv before the 1x1 conv to D
    head_init_std = 0.02  # std of the classification head's weight init (bias 0)
    skip_missing = True  # skip the encoder pass of missing modalities (exact; 1.6x faster at 0.7 / both)

    # ---------------------------------------------------------------- MaMOL adapter (SPEC §5.3), method=mamol
    adapter_layers = None  # image-encoder blocks with an adapter; None = paper: remote 6-11 (last half), natural 10-11
    adapter_layers_text = None  # natural data: blocks of the text encoder with an adapter; None = the last two
    adapter_rank = None  # LoRA rank r of every expert; None = paper: remote 8, natural 16
    num_dynamic_experts = None  # experts chosen per token by the pattern-aware router; None = remote 2, natural 4
    top_k = None  # dynamic experts kept per token (gates not renormalised); None = remote 1, natural 2
    num_shared_experts = None  # static experts applied to every sample; None = mamol 1, moe_lora 0
    pattern_dim = 8  # size of the missing-pattern embedding e
    adapter_scale = None  # multiplies the adapter output Δ; None = remote 1.0, natural 0.2
    router_hidden = None  # router hidden width; None = D // 2
    sparse_experts = True  # run each dynamic expert only on its routed tokens (exact); False = dense masked formula
    load_balance_weight = 0.0  # optional router load-balancing loss weight (0 = the paper's method)
    # MaMOL ablations (defaults = the full method)
    use_dynamic_experts = True  # False: no pattern-routed experts (and no router)
    use_shared_experts = True  # False: no shared experts
    use_modality_experts = True  # False: no modality-specific experts
    router_uses_pattern = True  # False: the router reads the token alone, not [token ; pattern embedding]
    modality_gate = "presence"  # modality expert on: "presence" (the paper) or "threshold" (the release: e_m > 0.5)

    # ---------------------------------------------------------------- baselines (method=...), README "Methods"
    # lora: W x + (lora_alpha / lora_rank) B A x on adapter_layers / adapter_layers_text (MaMOL's blocks)
    lora_rank = 8  # lora: rank r of every low-rank update (the LoRA paper's r = 8)
    lora_alpha = 8.0  # lora: the update is scaled by lora_alpha / lora_rank (the paper sets alpha = the first r)
    lora_targets = ["q", "v"]  # lora: adapted weights, any of "q", "k", "v", "o" (attention), "mlp" (both MLP layers)
    # moe_lora: MaMOL's sizes (adapter_* keys, num_dynamic_experts, top_k, num_shared_experts, sparse_experts,
    # load_balance_weight) with a router on the token alone and no pattern, shared-by-pattern or modality experts
    moe_router = "topk"  # moe_lora: "topk" (each token's top_k experts) or "soft" (softmax mixture of all)
    # mmp / dcp: learnable prompt tokens prepended to every sequence (removed again before pooling)
    # prompt_type: mmp "input" or "attention" (key/value prefixes); dcp "input" (= correlated+dynamic+common), "none",
    # or a "+"-joined subset such as "correlated+common"; inert for the other methods (kept for DCP's command lines)
    prompt_type = "input"  # mmp: input- or attention-level prompts; dcp: which prompt parts (see above)
    prompt_length = None  # mmp / dcp: prompt tokens per layer; None = the references': mmp 16, dcp 36 (12 per part)
    prompt_depth = None  # mmp / dcp: prompts enter the first N blocks of each tower; None = the first half (6 of 12)
    prompt_reduction = 16  # dcp: bottleneck ratio r of the prompt projections (hidden width = input width // r)

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
    debug = False  # run.py: show the full traceback of a project error instead of the one-line message

    # ---------------------------------------------------------------- experiments (run.py commands, README)
    logger = "csv"  # training curves: "csv" (metrics.csv) or "tensorboard" (also TensorBoard event files there)
    grid_types = None  # evaluate_grid: missing types, e.g. ["HS","lidar"]; None = each modality + both (or pairs, all)
    grid_ratios = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # evaluate_grid: ratios (0 = complete)
    seeds = [0, 1, 2]  # sweep: one run per seed and method (reports give mean ± std over seeds)
    methods = ["mamol"]  # sweep: method names or variants {"name": "r4", "method": "mamol", "adapter_rank": 4}
    sweep_datasets = None  # sweep: `datasets` values trained in turn, e.g. [["trento"], ["augsburg"]]; None = datasets
    sweep_train_missing = None  # sweep: e.g. [{"ratio": 0.7, "type": "both"}]; None = missing_ratio/type of train
    sweep_grid = True  # sweep: evaluate each trained checkpoint over grid_types x grid_ratios (the report's curves)
    report_dirs = []  # report: run or sweep folders to aggregate (searched for test_results.json and grid.json)
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
    missing_type={"train": "HS_SAR_Lidar", "val": "HS_SAR_Lidar", "test": "HS_SAR_Lidar"},
))


def _natural(task: str, val_check: float) -> dict:
    """DCP's fine-tuning values for one image-text task (adapter sizes: the paper's image-text values)."""
    return dict(datasets=[task], loss_names={task: 1}, learning_rate=1e-2, max_epoch=20, batch_size=256,
                val_check_interval=val_check)


ex.add_named_config("task_finetune_mmimdb", _natural("mmimdb", 0.2))
ex.add_named_config("task_finetune_food101", _natural("food101", 0.2))
ex.add_named_config("task_finetune_hatememes", _natural("hatememes", 0.11))


def defaults(*named_configs: str, **updates) -> dict:
    """The config ``python run.py with <named_configs...> key=value...`` would run with, without running it.

    Root values, then each named config, then ``updates`` (dict values merge key by key, as Sacred does).
    For tests and in-process tools (the model benchmark), so they share the one place defaults live.
    """
    cfg = dict(ex.configurations[0]())
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
