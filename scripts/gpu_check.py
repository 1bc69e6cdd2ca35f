r"""The GPU checks of gpt_scratch, prepared to run in one call of about 8 minutes on one CUDA GPU (an H100 here).

Checks, in order, each with its own time budget (`BUDGETS_S`) inside a total one (`TOTAL_BUDGET_S`):

1. parity: transformers' `GPT2LMHeadModel` at GPT-2 124M shapes with random weights (no download) and our `GPT`
   loaded from it; max |logit difference| in float32 (TF32 off) and under bf16 autocast; our cached greedy
   generation equal to the uncached one for 64 tokens.
2. shakespeare: the `shakespeare-gpu` preset with bf16 autocast until the loss on the WHOLE validation split is
   <= 1.47 (nanoGPT: 1.4697 after about 3 minutes on an A100); time to first reach it and (seconds, step, val) points.
3. train_124m: a GPT-2 124M training step at nanoGPT's shapes (batch 12 x 1024, bf16 autocast), ours and
   transformers' alternating; tokens/s and MFU against the device's datasheet bf16 peak and a measured 8192^3 bf16
   matmul.
4. resume: N steps straight against N/2, save, `Trainer.resume`, N/2, with dropout; with and without deterministic
   algorithms.
5. cpu_load: the GPU-trained checkpoint of check 2 (else 4) loads with `GPT.from_pretrained(path, device="cpu")` and
   samples on the CPU.
6. shakespeare_compiled: check 2 with `TrainerConfig.compile=True`, if the total budget leaves time for it.

After each check it prints a table row and rewrites `gpu_check.json` (atomically) in `--out`; `gpu_check.log` there
holds the details and tracebacks. A failed check records its error and the script goes on. Exit status: 0 all ran
and met their criteria, 1 a check raised an error, 2 a criterion was not met.

On the GPU machine (tool `run`, carry ["wheels", "gpu_data"], timeout_s 600), from the repository root:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site wheels/*.whl && \
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 GPT_SCRATCH_DATA=$PWD/gpu_data \
           TIKTOKEN_CACHE_DIR=$PWD/gpu_data/tiktoken && \
    python3 scripts/gpu_check.py --out $OUT

`wheels/` holds the fastcore wheel (the one package gpt_scratch imports that the machine lacks; made with
`pip download fastcore==2.2.41 --no-deps -d wheels`) and `gpu_data/` a copy of the offline data (Tiny Shakespeare,
tiktoken's files); both are git-ignored, hence carried. The package itself is imported from the checkout through
PYTHONPATH: `pip install -e .` there would try to fetch setuptools for its isolated build, and nothing can be fetched.

CPU smoke test of the same code path at toy sizes (CI runs it; well under a minute on 2 cores):

    GPT_SCRATCH_DATA=... TIKTOKEN_CACHE_DIR=... python scripts/gpu_check.py --dry-run --out /tmp/gpucheck
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Callable, Iterator

# cuBLAS reads this when CUDA starts, so it is set before anything touches the GPU; check 4's deterministic mode needs
# it, and on Hopper it is the default workspace size anyway
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch
import torch.nn.functional as F

# ---- every name this script takes from gpt_scratch ----
from gpt_scratch.bench import hf_gpt2, machine_info, mfu, ours_from_hf, time_alternating
from gpt_scratch.checkpoint import load_trainer_state
from gpt_scratch.data import atomic_write, get_batch
from gpt_scratch.harness import configure_optimizer
from gpt_scratch.model import GPT, GPTConfig, flops_per_token
from gpt_scratch.tokenizers import load_tokenizer, prepare_data
from gpt_scratch.devices import autocast, pick_dtype
from gpt_scratch.train import PRESETS, Trainer, TrainerConfig, evaluate_split, setup_training
# ---------------------------------------------------------

TOTAL_BUDGET_S = 440.0            # all checks together, hard limits included: under 8 minutes with start-up
BUDGETS_S = {"parity": 60.0, "shakespeare": 200.0, "train_124m": 75.0, "resume": 60.0, "cpu_load": 30.0,
             "shakespeare_compiled": 150.0}
DRY_BUDGETS_S = {"parity": 15.0, "shakespeare": 20.0, "train_124m": 10.0, "resume": 15.0, "cpu_load": 10.0,
                 "shakespeare_compiled": 20.0}      # --dry-run: every check runs, each inside its own budget
MIN_BUDGET_S = {"shakespeare_compiled": 60.0}      # run only if the total budget leaves this much
HARD_LIMIT = (1.2, 15.0)          # interrupt a check at 1.2 x budget (at most what the total leaves) + 15 s
TARGET_VAL = 1.47                 # whole-split validation loss of check 2 (nanoGPT's reference: 1.4697)
NANOGPT_REFERENCE = {"val_loss": 1.4697, "minutes": 3, "device": "A100", "compile": True}
FP32_LOGIT_TOL = 1e-4             # largest |logit difference| accepted from transformers in float32 (TF32 off)
BF16_ERROR_RATIO = 2.0            # our bf16 error against float32 may be this many times transformers' own
PEAK_BF16_TFLOPS = ((("H100", "PCIe"), 756.0), (("H100", "HBM3"), 989.0), (("H100", "SXM"), 989.0),
                    (("H200",), 989.0), (("A100",), 312.0))     # dense bf16 datasheet peaks; matched in this order
JSON_NAME, LOG_NAME = "gpu_check.json", "gpu_check.log"

log = logging.getLogger("gpu_check")


@dataclass(frozen=True)
class Sizes:
    "Every size the checks use; `FULL` on the GPU, `DRY` for the CPU smoke test."
    parity_model: GPTConfig                       # transformers' and our model in check 1
    parity_batch: tuple[int, int]                 # (B, T) of the logits compared
    gen_tokens: int                               # greedy tokens, cached against uncached
    shakespeare_model: dict                       # overrides of the preset's model (none on the GPU)
    shakespeare_trainer: dict                     # overrides of the preset's recipe (none on the GPU)
    eval_every: int                               # steps between whole-split evaluations in check 2
    train_model: GPTConfig                        # check 3's model (GPT-2 124M)
    train_batch: int                              # check 3's sequences per step (context: the model's)
    train_reps: int                               # alternating rounds timed in check 3
    matmul_n: int                                 # square bf16 matmul measured in check 3
    resume_model: dict                            # overrides of the shakespeare-gpu model (dropout 0.2 kept)
    resume_steps: int                             # N in check 4
    resume_batch: int
    sample_tokens: int                            # sampled on the CPU in check 5
    compile_enabled: bool = True                  # False: check 6 runs its code path with torch.compile disabled


FULL = Sizes(parity_model=GPTConfig(), parity_batch=(4, 1024), gen_tokens=64, shakespeare_model={},
             shakespeare_trainer={}, eval_every=100, train_model=GPTConfig(), train_batch=12, train_reps=15,
             matmul_n=8192, resume_model={}, resume_steps=40, resume_batch=32, sample_tokens=300)
TINY = dict(n_layer=2, n_head=2, n_embd=64, block_size=64)
DRY = Sizes(parity_model=GPTConfig(vocab_size=256, **TINY), parity_batch=(2, 64), gen_tokens=8,
            shakespeare_model=TINY, shakespeare_trainer=dict(steps=20, batch_size=8, warmup_steps=4),
            eval_every=10, train_model=GPTConfig(vocab_size=256, **TINY), train_batch=2, train_reps=2, matmul_n=256,
            resume_model=TINY, resume_steps=6, resume_batch=4, sample_tokens=20, compile_enabled=False)


class CheckTimeout(TimeoutError):
    "A check ran past its hard limit."


@dataclass
class Context:
    "What the checks share: device, sizes, scratch folder, the clock of the running check, and results so far."
    device: torch.device
    sizes: Sizes
    dry: bool
    work: Path                                    # checkpoints and weights (never under --out: they are large)
    flush: Callable[[], None]                     # rewrite the JSON now (long checks call it as they go)
    deadline: float = math.inf                    # time.perf_counter() by which the running check should stop
    checkpoints: dict[str, Path] = field(default_factory=dict)
    _data: tuple | None = None

    def char_data(self) -> tuple:
        "(tokenizer, train ids, val ids) of Tiny Shakespeare, character level, read once."
        if self._data is None: self._data = prepare_data(tokenizer="char")
        return self._data

    def left(self) -> float:
        "Seconds left of the running check's budget."
        return self.deadline - time.perf_counter()

    def sync(self):
        "Wait for the device's queued work (a no-op on the CPU)."
        if self.device.type == "cuda": torch.cuda.synchronize(self.device)


# ---------------------------------------------------------------- environment and small helpers

def device_name(device: torch.device) -> str:
    "`torch.cuda.get_device_name()` on CUDA, else the CPU's model name."
    if device.type == "cuda": return torch.cuda.get_device_name(device)
    return f"CPU: {machine_info()['cpu']}"


def environment(device: torch.device) -> dict:
    "Device, versions, date and CPU facts that every result depends on."
    import transformers
    info = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": machine_info(), "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
    transformers.utils.logging.disable_progress_bar()      # save_pretrained's shard bar would fill the output
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2 ** 30, 1), cudnn=torch.backends.cudnn.version())
    return info


def stamp(env: dict) -> dict:
    "The part of `environment` each check's record repeats."
    return {k: env[k] for k in ("device", "torch", "cuda", "transformers", "date")}


def peak_bf16_flops(name: str) -> float | None:
    "The dense bf16 datasheet peak of the device called `name` in FLOP/s, or None when the table does not know it."
    if "NVL" in name: return None                       # NVL parts have their own (lower) clocks
    for needles, tflops in PEAK_BF16_TFLOPS:
        if all(n in name for n in needles): return tflops * 1e12
    return None


def finite(obj):
    "`obj` with NaN and infinities replaced by None, so the JSON stays strict."
    if isinstance(obj, float): return obj if math.isfinite(obj) else None
    if isinstance(obj, dict): return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)): return [finite(v) for v in obj]
    return obj


def describe_error(e: BaseException) -> dict:
    "Type, message and the last lines of the traceback of `e`."
    lines = "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip().splitlines()
    lines = [line for line in lines if line.strip(" ^~")]                 # drop the column markers
    return {"type": type(e).__name__, "message": str(e)[:2000], "traceback": lines[-12:]}


@contextlib.contextmanager
def hard_limit(seconds: float) -> Iterator[None]:
    "Raise `CheckTimeout` in the main thread after `seconds` (where SIGALRM exists); a backstop for hangs."
    if not hasattr(signal, "setitimer") or seconds <= 0:
        yield
        return

    def expire(signum, frame): raise CheckTimeout(f"check still running after its hard limit of {seconds:.0f} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try: yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    "True float32 matmuls inside the block (setup_training allows TF32 on CUDA)."
    was = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try: yield
    finally: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = was


def synced(ctx: Context, fn: Callable[[], object]) -> Callable[[], object]:
    "`fn` followed by a device synchronisation, so host timers see all of its work and none of the next call's."
    def call():
        out = fn()
        ctx.sync()
        return out
    return call


# ---------------------------------------------------------------- check 1: parity with transformers

def logit_gap(a: torch.Tensor, b: torch.Tensor) -> dict:
    "Largest absolute and relative L2 difference of two logit tensors."
    a, b = a.double(), b.double()
    return {"max_abs": (a - b).abs().max().item(), "rel_l2": ((a - b).norm() / b.norm()).item()}


def greedy_agreement(ours: GPT, hf, prompt: torch.Tensor, n: int) -> dict:
    "Our greedy tokens with the KV cache against without it (and, for information, transformers' greedy tokens)."
    cached = ours.generate(prompt, n, temperature=0, use_cache=True)[:, prompt.shape[1]:]
    uncached = ours.generate(prompt, n, temperature=0, use_cache=False)[:, prompt.shape[1]:]
    same = (cached == uncached)
    out = {"new_tokens": n, "batch": prompt.shape[0], "equal_tokens": int(same.sum()), "cached_equals_uncached":
           bool(same.all()), "first_mismatch": None if same.all() else int((~same).any(0).nonzero()[0])}
    try:
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False,
                             use_cache=True, pad_token_id=0)[:, prompt.shape[1]:]
        out["equal_to_transformers_greedy"] = int((theirs == cached).sum())
    except Exception as e:                                             # information only: the check goes on
        out["transformers_greedy_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    return out


def check_parity(ctx: Context, rec: dict) -> str:
    "Check 1: logits of our GPT and transformers' GPT2LMHeadModel with the same random weights; cached generation."
    config, (B, T), dev = ctx.sizes.parity_model, ctx.sizes.parity_batch, ctx.device
    torch.manual_seed(0)
    hf = hf_gpt2(config).eval()
    with tempfile.TemporaryDirectory(dir=ctx.work) as d: ours = ours_from_hf(hf, d)
    hf, ours = hf.to(dev), ours.to(dev).eval()
    rec["params"] = ours.num_params()
    idx = torch.randint(config.vocab_size, (B, T), generator=torch.Generator().manual_seed(1)).to(dev)
    bf16 = pick_dtype(dev, "bfloat16")
    with torch.no_grad():
        with no_tf32():
            ref, mine = hf(input_ids=idx).logits.float(), ours(idx)[0].float()
            rec["float32"] = {**logit_gap(mine, ref), "logit_abs_max": ref.abs().max().item(), "tf32": False}
        with autocast(dev, bf16):
            hf16, ours16 = hf(input_ids=idx).logits.float(), ours(idx)[0].float()
        rec["bfloat16_autocast"] = {"ours_vs_transformers": logit_gap(ours16, hf16),
                                    "ours_vs_float32": logit_gap(ours16, ref),
                                    "transformers_vs_float32": logit_gap(hf16, ref)}
    rec["shape"] = {"batch": B, "context": T, **{k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd")}}
    prompt = torch.randint(config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(2)).to(dev)
    with no_tf32(): rec["generation_float32"] = gen = greedy_agreement(ours, hf, prompt, ctx.sizes.gen_tokens)
    f32, b = rec["float32"]["max_abs"], rec["bfloat16_autocast"]
    b_ok = b["ours_vs_float32"]["max_abs"] <= BF16_ERROR_RATIO * b["transformers_vs_float32"]["max_abs"] + 1e-6
    rec["criteria"] = {f"float32 max |dlogit| <= {FP32_LOGIT_TOL}": f32 <= FP32_LOGIT_TOL,
                       f"bf16 error vs float32 <= {BF16_ERROR_RATIO} x transformers'": b_ok,
                       "cached generation == uncached": gen["cached_equals_uncached"]}
    rec["passed"] = all(rec["criteria"].values())
    return (f"fp32 max|dlogit| {f32:.2e}; bf16 {b['ours_vs_transformers']['max_abs']:.3f} (ours vs fp32 "
            f"{b['ours_vs_float32']['max_abs']:.3f}, theirs {b['transformers_vs_float32']['max_abs']:.3f}); "
            f"cache {gen['equal_tokens']}/{gen['new_tokens'] * gen['batch']} tokens equal")


# ---------------------------------------------------------------- checks 2 and 6: shakespeare-gpu to val 1.47

def shakespeare_trainer(ctx: Context, name: str, compile_model: bool, train_seconds: float) -> Trainer:
    "A Trainer for the shakespeare-gpu preset (toy-sized in a dry run), its schedule ending by `train_seconds`."
    preset = PRESETS["shakespeare-gpu"]
    tok, train_ids, val_ids = ctx.char_data()
    cfg = replace(preset.trainer, out_dir=str(ctx.work / name), device=ctx.device.type, dtype="bfloat16",
                  compile=compile_model, max_seconds=train_seconds, **ctx.sizes.shakespeare_trainer)
    setup_training(cfg)                                    # seeds; TF32 on CUDA, as the CLI trains
    model = GPT(replace(preset.model, vocab_size=tok.vocab_size, **ctx.sizes.shakespeare_model))
    return Trainer(model, train_ids, val_ids, cfg, tok, progress=False)


def val_point(ctx: Context, trainer: Trainer, clocks: tuple[float, float], wall0: float, rec: dict) -> float:
    """The whole validation split's loss now (float32 weights, no autocast), appended to `rec['points']`; `clocks` are
    the training seconds with and without the first step's excess (compilation, CUDA warm-up)."""
    ctx.sync()
    val = evaluate_split(trainer.model, trainer.val_data)["loss"]
    wall = round(time.perf_counter() - wall0, 3)
    rec["points"].append([round(clocks[0], 3), round(clocks[1], 3), wall, trainer.step, round(val, 5)])
    if val <= TARGET_VAL and "reached" not in rec:
        rec["reached"] = {"train_seconds": round(clocks[0], 3), "train_seconds_after_warmup": round(clocks[1], 3),
                          "wall_seconds": wall, "step": trainer.step, "val_loss": val}
    return val


def steps_to_target(ctx: Context, trainer: Trainer, rec: dict) -> tuple[list[float], str]:
    """Drive `Trainer.train_step` until the whole-split validation loss reaches `TARGET_VAL`, the steps end or the
    clock does; the first step's excess over the second (compilation) is kept off the schedule's and the stop's clock.
    Returns the step times and why it stopped."""
    cfg, every, times, wall0 = trainer.cfg, ctx.sizes.eval_every, [], time.perf_counter()
    while trainer.step < cfg.steps:
        excess = max(0.0, times[0] - times[1]) if len(times) > 1 else 0.0
        clock = sum(times)
        if clock - excess >= cfg.max_seconds or ctx.left() < 5: return times, "time"
        trainer.elapsed = clock - excess                  # the learning-rate schedule on the clock, as Trainer.fit
        t = time.perf_counter()
        loss = trainer.train_step()
        times.append(time.perf_counter() - t)
        if not math.isfinite(loss): raise FloatingPointError(f"training loss {loss} at step {trainer.step + 1}")
        rec["last_train_loss"] = loss
        clocks = (sum(times), sum(times) - (max(0.0, times[0] - times[1]) if len(times) > 1 else 0.0))
        if trainer.step % every == 0 and val_point(ctx, trainer, clocks, wall0, rec) <= TARGET_VAL:
            return times, "target"
        if trainer.step % (every * 5) == 0: ctx.flush()
    return times, "steps"


def train_to_target(ctx: Context, rec: dict, name: str, compile_model: bool) -> Trainer:
    """The shakespeare-gpu preset trained by `steps_to_target`, its schedule ending by 85% of the check's budget at
    the latest; what happened is recorded in `rec`."""
    trainer = shakespeare_trainer(ctx, name, compile_model, train_seconds=max(1.0, 0.85 * ctx.left()))
    cfg = trainer.cfg
    rec.update(params=trainer.model.num_params(), steps_planned=cfg.steps, max_train_seconds=cfg.max_seconds,
               tokens_per_step=cfg.batch_size * trainer.block_size, dtype=str(trainer.dtype), compile=compile_model,
               eval_every=ctx.sizes.eval_every, points=[], target_val=TARGET_VAL, nanogpt=NANOGPT_REFERENCE,
               loop="Trainer.train_step driven directly: the preset's own estimates and checkpoints are skipped",
               points_are="[train_seconds, train_seconds_after_warmup, wall_seconds, step, whole-split val loss]; "
                          "train seconds leave out the evaluations; after_warmup leaves out the first step's excess "
                          "over the second (compilation)")
    wall0 = time.perf_counter()
    times, stop = steps_to_target(ctx, trainer, rec)
    excess = max(0.0, times[0] - times[1]) if len(times) > 1 else 0.0
    if not rec["points"] or rec["points"][-1][3] != trainer.step:
        val_point(ctx, trainer, (sum(times), sum(times) - excess), wall0, rec)
    steady = median(times[len(times) // 2:]) if times else float("nan")
    rec.update(stopped_by=stop, steps=trainer.step, train_seconds=sum(times), first_step_s=times[0] if times else None,
               warmup_excess_s=excess, wall_seconds=time.perf_counter() - wall0, median_step_ms=1e3 * steady,
               tokens_per_s=rec["tokens_per_step"] / steady, final_val=rec["points"][-1][4], final_lr=trainer.lr)
    if compile_model: rec["compile_seconds"] = excess                # the first step's excess over the second
    rec["passed"] = None if ctx.dry else "reached" in rec   # a toy run is not expected to reach the target
    return trainer


def shakespeare_summary(rec: dict) -> str:
    "One line for the table."
    hit = rec.get("reached")
    got = (f"val {hit['val_loss']:.4f} at step {hit['step']} after {hit['train_seconds']:.1f} s"
           if hit else f"not reached: val {rec['final_val']:.4f} after {rec['steps']} steps, "
                       f"{rec['train_seconds']:.1f} s")
    extra = f"; compile {rec['compile_seconds']:.1f} s" if "compile_seconds" in rec else ""
    return f"{got} ({rec['median_step_ms']:.1f} ms/step, {rec['tokens_per_s']:,.0f} tok/s){extra}"


def check_shakespeare(ctx: Context, rec: dict) -> str:
    "Check 2: the shakespeare-gpu preset, bf16 autocast, eager, to whole-split val <= 1.47; its checkpoint kept."
    trainer = train_to_target(ctx, rec, "shakespeare", compile_model=False)
    ctx.checkpoints["shakespeare"] = path = trainer.save("final")
    rec["checkpoint"] = str(path)
    return shakespeare_summary(rec)


def check_shakespeare_compiled(ctx: Context, rec: dict) -> str:
    "Check 6: check 2 with TrainerConfig.compile=True (compile time reported apart); in a dry run, compile disabled."
    rec["compile_disabled"] = not ctx.sizes.compile_enabled
    with torch.compiler.set_stance("force_eager") if rec["compile_disabled"] else contextlib.nullcontext():
        train_to_target(ctx, rec, "shakespeare-compiled", compile_model=True)
    return shakespeare_summary(rec)


# ---------------------------------------------------------------- check 3: GPT-2 124M training step and MFU

def matmul_flops(ctx: Context, n: int, reps: int = 5, inner: int = 10) -> dict:
    "Median FLOP/s of an n x n x n bf16 product on random data, on the check's device."
    g = torch.Generator(device=ctx.device).manual_seed(0)
    a, b = (torch.randn(n, n, device=ctx.device, generator=g, dtype=torch.bfloat16) for _ in range(2))
    c = torch.empty_like(a)

    def products():
        for _ in range(inner): torch.mm(a, b, out=c)
    t = median(time_alternating({"mm": synced(ctx, products)}, reps=reps, warmup=3)["mm"]) / inner
    return {"n": n, "dtype": "bfloat16", "flops": 2 * n ** 3 / t, "seconds": t}


def paired_train_steps(ctx: Context, config: GPTConfig, batch: int) -> dict[str, Callable[[], float]]:
    "One bf16-autocast optimiser step of our Trainer and of transformers' GPT-2 (same weights and batches), synced."
    torch.manual_seed(0)
    hf = hf_gpt2(config)
    ours = ours_from_hf(hf, ctx.work / "gpt2-weights")
    hf = hf.to(ctx.device).train()
    data = torch.randint(config.vocab_size, (200_000,), generator=torch.Generator().manual_seed(0))
    tcfg = TrainerConfig(out_dir=str(ctx.work / "gpt2-run"), steps=10 ** 9, batch_size=batch, warmup_steps=0,
                         eval_interval=10 ** 9, device=ctx.device.type, dtype="bfloat16", seed=0)
    trainer = Trainer(ours.train(), data, data, tcfg, progress=False)
    optimizer = configure_optimizer(hf, tcfg, fused=True)       # as the Trainer's: fused AdamW, same groups
    batches, amp = torch.Generator().manual_seed(0), trainer.dtype

    def hf_step() -> float:
        for group in optimizer.param_groups: group["lr"] = tcfg.lr
        x, y = get_batch(data, batch, config.block_size, generator=batches, device=ctx.device)
        with autocast(ctx.device, amp):
            loss = F.cross_entropy(hf(input_ids=x).logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), tcfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()
    return {"ours": synced(ctx, trainer.train_step), "transformers": synced(ctx, hf_step)}


def check_train_124m(ctx: Context, rec: dict) -> str:
    "Check 3: tokens/s and MFU of a GPT-2 124M training step, ours and transformers' alternating."
    s, name = ctx.sizes, device_name(ctx.device)
    rec["matmul"] = mm = matmul_flops(ctx, s.matmul_n)
    peak = peak_bf16_flops(name)
    rec["peak_bf16_flops"], rec["peak_source"] = peak, "datasheet table by device name" if peak else "unknown device"
    config, T = s.train_model, s.train_model.block_size
    tokens = s.train_batch * T
    rec.update(batch=s.train_batch, context=T, vocab_size=config.vocab_size, tokens_per_step=tokens,
               dtype="bfloat16 autocast", flops_formula="6N + 12 L C T (gpt_scratch.model.flops_per_token)",
               flops_per_token=flops_per_token(config, T), reps=s.train_reps)
    steps = paired_train_steps(ctx, config, s.train_batch)
    losses = {k: fn() for k, fn in steps.items()}                          # first step of each (warm-up too)
    times = time_alternating(steps, reps=s.train_reps, warmup=2)
    rec["models"] = {}
    for model, ts in times.items():
        t = median(ts)
        rec["models"][model] = {"ms_per_step": 1e3 * t, "tokens_per_s": tokens / t, "first_loss": losses[model],
                                "mfu_vs_peak": mfu(config, T, tokens / t, peak) if peak else None,
                                "mfu_vs_measured_matmul": mfu(config, T, tokens / t, mm["flops"]), "times_s": ts}
    if ctx.device.type == "cuda": rec["max_memory_gib"] = torch.cuda.max_memory_allocated(ctx.device) / 2 ** 30
    o, h = rec["models"]["ours"], rec["models"]["transformers"]
    rec["speedup_vs_transformers"] = o["tokens_per_s"] / h["tokens_per_s"]
    rec["passed"] = None                                                   # a measurement: no criterion
    vs_peak = f"{o['mfu_vs_peak']:.0%} of peak, " if peak else ""
    return (f"ours {o['ms_per_step']:.1f} ms ({o['tokens_per_s']:,.0f} tok/s, MFU {vs_peak}"
            f"{o['mfu_vs_measured_matmul']:.0%} of matmul {mm['flops'] / 1e12:.3g} TFLOP/s); transformers "
            f"{h['ms_per_step']:.1f} ms; {rec['speedup_vs_transformers']:.2f}x")


# ---------------------------------------------------------------- check 4: exact resume with dropout

@contextlib.contextmanager
def determinism(on: bool) -> Iterator[dict]:
    "Deterministic algorithms (warn-only: ops without one warn) inside the block; yields the settings used."
    was = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = on, False
    try:
        yield {"use_deterministic_algorithms": on, "warn_only": True, "cudnn.deterministic": on,
               "cudnn.benchmark": False, "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
               "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = was[2], was[3]


def resume_run(ctx: Context, folder: Path, split: bool) -> tuple[dict[int, float], dict, int | None]:
    "Per-step losses and final weights of N steps straight, or of N/2, save, `Trainer.resume`, N/2; saved step."
    s = ctx.sizes
    tok, train_ids, val_ids = ctx.char_data()
    cfg = replace(PRESETS["shakespeare-gpu"].trainer, out_dir=str(folder), steps=s.resume_steps,
                  batch_size=s.resume_batch, warmup_steps=s.resume_steps // 4, eval_interval=10 ** 6, eval_iters=2,
                  log_interval=1, device=ctx.device.type, dtype="bfloat16")
    setup_training(cfg)                                        # the same seed, so the same initial weights
    model = GPT(replace(PRESETS["shakespeare-gpu"].model, vocab_size=tok.vocab_size, **s.resume_model))
    trainer = Trainer(model, train_ids, val_ids, cfg, tok, progress=False)
    saved_step = None
    if split:
        trainer.fit(until=s.resume_steps // 2)
        del trainer, model
        saved_step = load_trainer_state(folder / "last")["step"]
        trainer = Trainer.resume(folder, train_ids, val_ids, tokenizer=tok, progress=False)
    trainer.fit()
    losses = {r["step"]: r["loss"] for r in trainer.history if "loss" in r}
    weights = {k: v.detach().float().cpu() for k, v in trainer.model.state_dict().items()}
    return losses, weights, saved_step


def compare_resume(ctx: Context, tag: str, deterministic: bool) -> dict:
    "Straight against resumed under one determinism setting: largest loss and weight differences."
    with determinism(deterministic) as settings, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        straight, w_straight, _ = resume_run(ctx, ctx.work / f"resume-{tag}-straight", split=False)
        resumed, w_resumed, saved_step = resume_run(ctx, ctx.work / f"resume-{tag}-split", split=True)
    n = ctx.sizes.resume_steps
    missing = [i for i in range(1, n + 1) if i not in straight or i not in resumed]
    if missing: raise RuntimeError(f"{tag}: no logged loss for steps {missing[:10]} (log_interval=1 expected)")
    diffs = [abs(straight[i] - resumed[i]) for i in range(1, n + 1)]
    notes = sorted({str(w.message).splitlines()[0][:200] for w in caught})
    return {"settings": settings, "steps": n, "saved_at_step": saved_step, "max_loss_diff": max(diffs),
            "max_loss_diff_after_resume": max(diffs[n // 2:]),
            "first_differing_step": next((i + 1 for i, d in enumerate(diffs) if d), None),
            "max_weight_diff": max((w_straight[k] - w_resumed[k]).abs().max().item() for k in w_straight),
            "losses_straight": [straight[i] for i in range(1, n + 1)], "warnings": notes[:8]}


def check_resume(ctx: Context, rec: dict) -> str:
    "Check 4: exact resume through the Trainer with dropout, deterministic algorithms on and then off."
    rec["dropout"] = PRESETS["shakespeare-gpu"].model.dropout
    for tag, on in (("deterministic", True), ("default", False)):
        rec[tag] = compare_resume(ctx, tag, on)
        ctx.flush()
    ctx.checkpoints["resume"] = ctx.work / "resume-deterministic-split" / "last"
    det, dflt = rec["deterministic"], rec["default"]
    rec["criteria"] = {"deterministic: resumed losses == straight": det["max_loss_diff"] == 0,
                       "deterministic: resumed weights == straight": det["max_weight_diff"] == 0,
                       "checkpoint saved at N/2": det["saved_at_step"] == ctx.sizes.resume_steps // 2}
    rec["passed"] = all(rec["criteria"].values())
    return (f"N={det['steps']}, dropout {rec['dropout']}: max |dloss| deterministic {det['max_loss_diff']:.2e} "
            f"(weights {det['max_weight_diff']:.1e}), default {dflt['max_loss_diff']:.2e}")


# ---------------------------------------------------------------- check 5: a GPU checkpoint on the CPU

def check_cpu_load(ctx: Context, rec: dict) -> str:
    "Check 5: the checkpoint trained in check 2 (else 4) loads on the CPU, gives the device's logits, and samples."
    name = next((k for k in ("shakespeare", "resume") if k in ctx.checkpoints), None)
    if name is None: raise RuntimeError("no GPU-trained checkpoint: checks shakespeare and resume did not save one")
    path = ctx.checkpoints[name]
    rec.update(checkpoint=str(path), trained_by=name)
    cpu = GPT.from_pretrained(path, device="cpu")
    tok = load_tokenizer(path, cpu.config.vocab_size)
    window = ctx.char_data()[2][:cpu.config.block_size][None]               # (1, T) of the validation split
    with torch.no_grad(), no_tf32():
        on_device = GPT.from_pretrained(path, device=ctx.device)(window.to(ctx.device))[0].float().cpu()
        rec["logits_cpu_vs_device"] = logit_gap(cpu(window)[0], on_device)
    prompt = torch.tensor([tok.encode("ROMEO:")])
    t = time.perf_counter()
    out = cpu.generate(prompt, ctx.sizes.sample_tokens, temperature=0.8, top_k=50,
                       generator=torch.Generator().manual_seed(0))
    rec["sample_seconds"] = time.perf_counter() - t
    rec["sample"] = text = tok.decode(out[0].tolist())
    rec["cpu_tokens_per_s"] = ctx.sizes.sample_tokens / rec["sample_seconds"]
    rec["criteria"] = {"sample decodes to new text": len(text) > len("ROMEO:"),
                       "CPU logits match the device's (max |d| < 1e-3)": rec["logits_cpu_vs_device"]["max_abs"] < 1e-3}
    rec["passed"] = all(rec["criteria"].values())
    return (f"{name} checkpoint: CPU vs device max|dlogit| {rec['logits_cpu_vs_device']['max_abs']:.1e}; "
            f"{ctx.sizes.sample_tokens} tokens at {rec['cpu_tokens_per_s']:.0f} tok/s: {text[:40]!r}")


# ---------------------------------------------------------------- the runner

CHECKS: tuple[tuple[str, Callable[[Context, dict], str]], ...] = (
    ("parity", check_parity), ("shakespeare", check_shakespeare), ("train_124m", check_train_124m),
    ("resume", check_resume), ("cpu_load", check_cpu_load), ("shakespeare_compiled", check_shakespeare_compiled))


def setup_logging(out: Path):
    "Table rows to stdout; everything, with times, to the log file (warnings too)."
    log.setLevel(logging.DEBUG); log.propagate = False
    file = logging.FileHandler(out / LOG_NAME, mode="w", encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    screen = logging.StreamHandler(sys.stdout)
    screen.setLevel(logging.INFO); screen.setFormatter(logging.Formatter("%(message)s"))
    for handler in (file, screen): log.addHandler(handler)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(file)


def row(name: str, rec: dict) -> str:
    "A Markdown table row for one check."
    seconds = f"{rec['seconds']:.1f}" if "seconds" in rec else ""
    summary = rec.get("summary") or (f"{rec['error']['type']}: {rec['error']['message'][:150]}" if "error" in rec
                                     else rec.get("reason", ""))
    return f"| {name} | {rec['status']} | {seconds} | {summary.splitlines()[0] if summary else ''} |"


def run_check(ctx: Context, name: str, fn: Callable[[Context, dict], str], budget: float, hard: float, rec: dict):
    "Run one check inside its budget (interrupted after `hard` s), filling `rec`; errors are recorded, not raised."
    rec.update(status="running", budget_s=budget)
    start = time.perf_counter()
    ctx.deadline = start + budget
    if ctx.device.type == "cuda": torch.cuda.reset_peak_memory_stats(ctx.device)
    try:
        with hard_limit(hard):
            rec["summary"] = fn(ctx, rec)
        rec["status"] = {True: "passed", False: "FAILED", None: "ok"}[rec.get("passed")]
    except KeyboardInterrupt:
        rec.update(status="interrupted"); raise
    except BaseException as e:  # noqa: BLE001 -- every failure is recorded and the next check runs
        rec.update(status="ERROR", error=describe_error(e))
        log.debug("%s failed:\n%s", name, "".join(traceback.format_exception(type(e), e, e.__traceback__)))
    finally:
        rec["seconds"] = time.perf_counter() - start
        rec["over_budget"] = rec["seconds"] > budget
        gc.collect()
        if ctx.device.type == "cuda": torch.cuda.empty_cache()


def run_all(ctx: Context, results: dict, only: set[str], total: float, budgets: dict[str, float]) -> dict:
    """Every selected check in order, each within its budget and what is left of `total` (a dry run skips none: it
    must exercise them all); the JSON after each."""
    start, env = time.perf_counter(), results["environment"]
    log.info("| check | status | seconds | result |\n|---|---|---:|---|")
    for name, fn in CHECKS:
        rec = results["checks"][name] = stamp(env)
        left = math.inf if ctx.dry else total - (time.perf_counter() - start)
        budget, need = min(budgets[name], left), 0.0 if ctx.dry else MIN_BUDGET_S.get(name, 0.0)
        if name not in only: rec.update(status="skipped", reason="not in --only")
        elif budget < max(need, 1.0): rec.update(status="skipped", reason=f"{left:.0f} s of the total budget left")
        else: run_check(ctx, name, fn, budget, min(budget * HARD_LIMIT[0], left) + HARD_LIMIT[1], rec)
        log.info(row(name, rec))
        log.debug("%s: %s", name, json.dumps(finite(rec), default=str)[:4000])
        ctx.flush()
    results["total_seconds"] = time.perf_counter() - start
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    "Command-line options."
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help=f"folder for {JSON_NAME} and {LOG_NAME}")
    p.add_argument("--dry-run", action="store_true", help="the same checks at toy sizes on the CPU (CI smoke test)")
    p.add_argument("--only", default=",".join(n for n, _ in CHECKS), help="comma-separated checks to run")
    args = p.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    if bad := args.only - {n for n, _ in CHECKS}:
        p.error(f"unknown check(s) {sorted(bad)}; choose from {', '.join(n for n, _ in CHECKS)}")
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device here: these checks need a GPU (use --dry-run for the CPU smoke test)")
    return args


def main(argv: list[str] | None = None) -> int:
    "Run the checks; the exit status says whether all of them ran (1: an error) and met their criteria (2: not)."
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    setup_logging(args.out)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run: torch.set_num_threads(1)       # toy sizes gain nothing from threads; steadier on busy CI
    env = environment(device)
    results = {"script": "scripts/gpu_check.py", "dry_run": args.dry_run, "environment": env, "checks": {}}
    log.info(f"{env['device']} | torch {env['torch']} | CUDA {env['cuda']} | transformers {env['transformers']} | "
             f"{env['date']}{' | DRY RUN (toy sizes, CPU)' if args.dry_run else ''}")
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    flush = lambda: atomic_write(args.out / JSON_NAME, json.dumps(finite(results), indent=1, default=str))
    ctx = Context(device=device, sizes=DRY if args.dry_run else FULL, dry=args.dry_run, work=work, flush=flush)
    try:
        run_all(ctx, results, args.only, TOTAL_BUDGET_S, DRY_BUDGETS_S if args.dry_run else BUDGETS_S)
    finally:
        flush()
        shutil.rmtree(work, ignore_errors=True)
    statuses = [r["status"] for r in results["checks"].values()]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    log.info(f"\n{len(statuses)} checks in {results.get('total_seconds', 0):.0f} s: {counts}; "
             f"wrote {args.out / JSON_NAME}")
    return 1 if "ERROR" in statuses else 2 if "FAILED" in statuses else 0


if __name__ == "__main__":
    sys.exit(main())
