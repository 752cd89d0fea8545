"""NaturalSpeech 2 (prior + speech prompt + latent diffusion) on a codec-codes dataset.

    python launch/train.py --config=configs/diffusion.py:tiny --workdir=runs/ns2_tiny \
        --config.data.dataset_dir=DATA/<name>_codes/1.0.0
    python launch/train.py --config=configs/diffusion.py:paper --dry_run

The dataset is a prepared dataset encoded by a trained codec (``launch/codec.py encode-dataset
--checkpoint CODEC_RUN DATA/<name>/1.0.0 DATA/<name>_codes/1.0.0``); its ``codec.json`` names the
codec run (or pass ``--config.codec.checkpoint=CODEC_RUN``). ``data.dataset_dir`` empty = the
embedded synthetic dataset encoded by its codec, which ``python launch/quickstart.py
--workdir=runs/quickstart_tiny`` makes and registers (``:smoke`` looks for ``--preset=smoke``'s;
until then the task names that command in one sentence). Shared data:
``--config.data.train_splits=train,cathy --config.data.eval_split=dev``.

Hardware and Expected results (measured; no trained codec existed yet, so throughput was measured
with a random 16 x 1024 x 256 codec on the embedded smoke dataset with random codes: this config
with a random codec, 20 steps: ``python launch/ns2_throughput.py tiny 20``):
  * smoke (0.17M parameters): tests only; tests/test_ns2_task.py trains 3 steps + one evaluation
    through the generic loop in about 60 s of CPU time (mostly compilation).
  * tiny (6.3M parameters): 2 CPU cores shared with other jobs (load ~9): 5.1 s/step, i.e. about
    600 padded latent frames/s (batch 8 in the 384-frame bucket; per step ~1450 real target and
    ~1000 prompt frames); in 20 steps model/duration_l1 1.78 -> 1.49 and model/pitch_l1
    4.96 -> 4.09 while model/data stays ~1.0 (warm-up is 1000 steps). Quality of a real-speech run:
    tiny_speech below.
  * tiny_speech (3.6M parameters) on ../shared/data (speechocean762 train + cathy, 1939
    utterances, 2.2 h; 124 over 8 s skipped, reported) with the codec
    ``configs/codec.py:tiny_spectral`` trained there for 2000 steps (18 min):
    ``python launch/train.py --config=configs/diffusion.py:tiny_speech --workdir=RUN
    --config.data.dataset_dir=DATA/shared_codes/1.0.0 --config.data.train_splits=train,cathy
    --config.data.eval_split=dev``. 5432 steps in 60 min on the 2 cores (1.58 steps/s at batch 8:
    about 3700 real latent frames/s, prompt + target, of which 2100 target frames). Loss means
    over steps 500-1500 -> 4500-5432: total 3.68 -> 2.82, data 0.27 -> 0.19, CE-RVQ 27.4 -> 20.9,
    duration L1 0.39 -> 0.32, pitch L1 0.24 -> 0.19 (still falling). On 40 dev pairs (20 unseen
    speakers, 3 s prompts from another utterance; ``launch/evaluate.py tts --checkpoint RUN
    --from_prepared DATA/shared_codes/1.0.0 --split dev --limit 40 --asr moonshine``):
    | system | WER | speaker sim | DNSMOS OVRL |
    | ground truth | 0.265 | 0.806 | 2.99 |
    | ground truth through the codec | 0.347 | 0.705 | 2.60 |
    | generated | 1.119 | 0.622 | 2.50 |
    The voice moves towards the prompt's (0.62), the prosody is close (pitch mean 18 Hz from the
    prompt, as the codec's 20 Hz) but the words are not there yet: moonshine hears other words
    ("Till the police at Sears Garden ..." for "In the police state none of us are safe") or
    nothing. This budget is not enough for real speech; on the quickstart's espeak corpus, far
    more regular, the same model reaches WER 0.58 in 10 min (1200 steps at batch 4). Resumed to
    11039 steps (about 110 min in all) it does not improve: WER 1.109, speaker sim 0.620, DNSMOS
    2.47 on the same 40 pairs; the data loss has sat at 0.19-0.22 since step ~3500 (mean 0.194
    over 10000-11039), and on the training speaker (cathy) the output is phonetically close but
    not word-for-word (WER 1.00). This model is too small, or this CPU budget too short, for real
    speech: the next step is a larger preset on an accelerator.
    Where the words go (``launch/probe_diffusion.py``: teacher-forced, dataset durations and F0,
    12 utterances): on the training speaker (cathy) the denoiser's x0 at t = 1, the conditional
    mean, has WER 0.63 but the sample 0.83-1.08, the words being lost between t ~ 0.8 and 0.3;
    on dev speakers already the conditional mean is off (relative latent MSE 0.79 against 0.48 on
    cathy; WER 0.89, the codec's own 0.68 on those 12): the model generalises poorly to new
    voices. Fine-tuned 8000 more steps (85 min) with ``--config.init_from=RUN
    --config.model.cond_drop_prob=0.2 --config.optim.lr=5e-4`` (classifier-free guidance on
    phonemes + pitch + prompt), guidance 2 keeps more words along the trajectory (cathy sample
    WER 0.74 vs 0.83 at guidance 1; dev 0.95 vs 1.46), and on the 40 dev pairs: guidance 1 WER
    1.143 / sim 0.633 / DNSMOS 2.51, guidance 2 1.017 / 0.634 / 2.51, guidance 3 1.034 / 0.634 /
    2.47 (``launch/evaluate.py tts ... --guidance_scale 2``; 0.963 at step 5000 of the 8000):
    better, still not intelligible. Tried at inference on that fine-tune (same 40 pairs, guidance
    2): the mean of its last 3 checkpoints (steps 7500-8000) 0.949 / 0.636 / 2.48; guidance only
    for t in [0.2, 0.8] 1.085 (scale 2) and 1.031 (scale 3); temperature 0.5 0.969: nothing
    beyond the noise of ~150 words. A deeper model from scratch (``--config.model.wn_layers=12
    --config.model.enc_layers=3 --config.model.cond_drop_prob=0.2 --config.ema_decay=0.999``,
    6.4M parameters, 0.84-1.05 steps/s), 4266 steps (80 min): guidance 2 WER 0.963 / sim 0.635 /
    DNSMOS 2.64 with its EMA weights (0.949 / 0.620 / 2.50 raw; guidance 1 1.139): the same
    words in half the training time of the 3.6M model's 19000 steps, not intelligible either.
    All of the above trained on the former aligner's durations. On the current local aligner's
    (same command, 5432 steps, 74 min, 1.26 steps/s): WER 1.160 / sim 0.607 / DNSMOS 2.39 on the
    same 40 pairs, no better: on speechocean762 that aligner is near-uniform (per-token Viterbi
    confidence -3.44, cathy -1.94; consonants median 1 frame), so neither duration source is right.
    **The fix was the durations.** On pocketsphinx's alignment (``launch/prepare_data.py
    --aligner=pocketsphinx --max_edge_silence=0.2``: 0.6% one-frame phonemes, edge silences cut
    to 0.2 s, train 1.37 h), the 6.4M variant above (``--config.model.wn_layers=12
    --config.model.enc_layers=3 --config.model.cond_drop_prob=0.2 --config.ema_decay=0.999``),
    4000 steps (about 90 min, 0.78 steps/s mean with tests and an evaluation beside it; per step
    8 x (157 target + 115 prompt) real latent frames, i.e. ~1700 latent frames/s), EMA weights,
    guidance 2, on 40 dev pairs of that dataset:
    | system | WER | speaker sim | DNSMOS OVRL |
    | ground truth | 0.231 | 0.805 | 2.92 |
    | ground truth through the codec | 0.381 | 0.703 | 2.48 |
    | generated | 0.425 | 0.625 | 2.59 |
    Intelligible: moonshine hears "wondering how many people have it" and "how would you be tough
    of this" (for "... get out of this"); the generated length matches (train-time length ratio
    1.04 against 1.3-1.45 before). Loss means over steps 500-1500 -> 3000-4200: total 3.98 ->
    3.34, data 0.30 -> 0.25, CE-RVQ 31.0 -> 26.0, duration L1 0.35 -> 0.30, pitch L1 0.19 -> 0.17.
  * base (124M parameters): one GPU (bfloat16 compute), 20-100 h of speech, 200K steps.
  * paper: the paper's sizes, 16 GPUs x ~6K latent frames, AdamW 5e-4, 32K warm-up,
    inverse-sqrt decay, 300K steps. Dry run (measured): phoneme_encoder 69.4M (paper 72M),
    duration_predictor 34.2M (34M), pitch_predictor 50.0M (50M), prompt_encoder 69.4M (69M),
    diffusion 181.6M (183M), total 404.6M (408M without the codec).

Scale-out (``--compile_only``: the real train step compiled for a mesh of 8 simulated CPU devices
and the largest bucket; XLA memory analysis per device = arguments + outputs + temporaries -
donated, with XLA's own heap peak in brackets; FLOPs = cost analysis of all devices; measured):
  * tiny, batch 8 x 640 frames, float32, 122 GFLOP per step: data=8 224.0 MB/device (92.0 MB);
    data=2 x fsdp=4 196.7 MB/device (68.0 MB). Compiled in 178 s (data=8) now that
    ``--compile_only`` skips LLVM optimisation on CPU (about 610 s before, same memory/FLOPs).
  * paper, batch 128 x 1600 frames, bf16 compute: the CPU compile does not fit the 23 GB
    machine (killed by the memory watchdog at 19.5 GB resident after 30 min, data=8, still
    growing). Compiled instead for a real TPU topology with libtpu, no TPU needed
    (``--compile_topology=v5p:2x2x2``: 8 TPU v5p chips, 95 GB HBM each; XLA's TPU compiler):
      data=8: 30.5 GB/device (29.0 GB) = arguments 6.47 GB (fp32 weights, Adam and EMA,
      replicated) + temporaries 24.0 GB; 298.7 TFLOP per step (37.3 per chip); compiled in
      1467 s, 14.5 GB resident.
      data=2 x fsdp=4: 34.5 GB/device (24.9 GB) = arguments 1.62 GB (weights and optimizer
      state split 4 ways) + temporaries 32.9 GB (the all-gathered weights among them);
      298.6 TFLOP per step; compiled in 879 s, 13.1 GB resident.
    Both fit a v5p chip with room for a larger batch; XLA's own heap peak (in brackets) is the
    tighter figure, our sum counts every temporary as live at once.
    The unpartitioned HLO cost analysis gives 295 TFLOP per step (2.3 TFLOP per 20 s utterance).

Periodic evaluation (``eval_every``) synthesizes ``eval.num_examples`` held-out sentences with
prompts from other utterances of held-out speakers and writes, under ``samples/step_N/``, the
generated / ground-truth / codec-resynthesized / prompt audio, mel and pitch PNGs; metrics:
duration error, length ratio and (when the evaluation extras are installed) WER and speaker
similarity of generated speech, ground truth and codec resynthesis.
"""

from __future__ import annotations

import ml_collections

from configs.common import base_config, select_preset
from naturalspeech2_jax.models import ns2_task  # noqa: F401  (registers the "ns2" task)
from naturalspeech2_jax.models.ns2 import model_config

# Real speech up to 20 s (frames, at 80 per second); synthetic/short corpora up to 8 s.
SPEECH_BUCKETS, SPEECH_TOKENS = (256, 512, 800, 1200, 1600), (64, 128, 192, 256)
SHORT_BUCKETS, SHORT_TOKENS = (256, 384, 512, 640), (64, 96, 128)

PRESETS = {
    # name: steps, batch, lr, warm-up, buckets, token buckets, eval sampler/steps, dtype
    "smoke": dict(steps=4, batch=8, lr=1e-3, warmup=2, buckets=(128, 256, 384), tokens=(32, 64, 96),
                  sampler="dpm++2m", eval_steps=4, dtype="float32"),
    "tiny": dict(steps=20000, batch=8, lr=5e-4, warmup=1000, buckets=SHORT_BUCKETS,
                 tokens=SHORT_TOKENS, sampler="dpm++2m", eval_steps=25, dtype="float32"),
    # tiny for real speech on 2 CPU cores (../shared/data: train + cathy): the quickstart's
    # slimmer model (6 WaveNet layers, 3-layer predictors, 1-layer encoders; 3.6M parameters),
    # two frame buckets up to 8 s and one token bucket (2 compiled train steps, not 12). Measured
    # below ("Expected results").
    "tiny_speech": dict(steps=5432, batch=8, lr=1e-3, warmup=200, buckets=(384, 640),
                        tokens=(128,), sampler="dpm++2m", eval_steps=25, dtype="float32",
                        like="tiny", model=dict(wn_layers=6, pred_layers=3, enc_layers=1,
                                                prompt_layers=1)),
    "base": dict(steps=200_000, batch=32, lr=5e-4, warmup=8000, buckets=SPEECH_BUCKETS,
                 tokens=SPEECH_TOKENS, sampler="euler", eval_steps=150, dtype="bfloat16"),
    "paper": dict(steps=300_000, batch=128, lr=5e-4, warmup=32000, buckets=SPEECH_BUCKETS,
                  tokens=SPEECH_TOKENS, sampler="euler", eval_steps=150, dtype="bfloat16"),
}  # fmt: skip


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = select_preset(PRESETS, arg, __name__)
    p = PRESETS[preset]
    c = base_config()
    c.preset = preset
    c.task = "ns2"
    c.total_steps = p["steps"]
    c.batch_size = p["batch"]
    size = p.get("like", preset)  # a variant takes its model sizes from the preset it is like
    c.model = model_config(size)
    c.model.update(p.get("model", {}))
    c.codec = ml_collections.ConfigDict(
        dict(
            checkpoint="",  # codec run (--workdir of configs/codec.py); empty = dataset codec.json
            num_quantizers=16,
            codebook_size=1024,
            latent_dim=256,
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            dataset_dir="",  # DATA/<name>_codes/1.0.0; empty = the embedded codes dataset
            embedded_size="smoke" if preset == "smoke" else "default",
            train_splits="train",  # comma-separated; the shared data: "train,cathy"
            eval_split="heldout",  # held-out speakers; the shared data: "dev"
            buckets=p["buckets"],  # frame buckets (a bounded number of compiled shapes)
            token_buckets=p["tokens"],
            num_threads=2,
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(
            num_examples=2 if preset == "smoke" else 4,
            sampler=p["sampler"],  # euler (paper, 150 steps) | heun | dpm++2m | sde
            steps=p["eval_steps"],
            temperature=1 / 1.2,
            guidance_scale=1.0,  # > 1 needs model.prompt_drop_prob > 0
            prompt_frames=240,  # 3 s prompts, as in the paper's evaluation
            max_frames=max(p["buckets"][-1], 256) if preset != "smoke" else 128,
            max_tokens=p["tokens"][-1],
            asr="" if preset == "smoke" else "moonshine",
            speaker_similarity=preset != "smoke",
            seed=0,
        )
    )
    c.precision.compute_dtype = p["dtype"]
    c.optim.lr = p["lr"]
    c.optim.warmup_steps = p["warmup"]
    c.optim.schedule = "inverse_sqrt"
    c.optim.weight_decay = 0.01
    c.optim.b2 = 0.98
    c.ema_decay = 0.0 if size in ("smoke", "tiny") else 0.9999
    c.log_every = 1 if preset == "smoke" else 50
    c.eval_every = 0 if preset == "smoke" else (2000 if size == "tiny" else 10000)
    c.checkpoint_every = c.total_steps if preset == "smoke" else 2000
    return c
