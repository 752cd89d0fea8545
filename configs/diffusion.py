"""NaturalSpeech 2 (prior + speech prompt + latent diffusion) on a codec-codes dataset.

    python launch/train.py --config=configs/diffusion.py:tiny_speech --workdir=RUN \
        --config.data.dataset_dir=DATA/<name>_codes/1.0.0 --config.data.train_splits=train,cathy \
        --config.data.eval_split=dev --config.model.wn_layers=12 --config.model.enc_layers=3 \
        --config.model.cond_drop_prob=0.2 --config.ema_decay=0.999
    python launch/train.py --config=configs/diffusion.py:paper --dry_run

Data: codes from ``launch/codec.py encode-dataset`` (its ``codec.json`` names the codec run);
empty ``data.dataset_dir`` = the embedded codes that ``launch/quickstart.py`` registers. Presets:
smoke (tests), tiny and tiny_speech (CPU), base (1 GPU, bf16), paper (16 GPUs, 404.6M params).
Expected (2 CPU cores, pocketsphinx durations, ~90 min, step 4000, EMA, guidance 2): on 40 unseen
dev speakers WER 0.425, speaker sim 0.625, DNSMOS 2.59 (codec resynthesis 0.381 / 0.703 / 2.48).
Run history (throughput, compiled memory/FLOPs, every real-speech run): docs/experiments/ns2.md.
"""

from __future__ import annotations

import ml_collections

from configs.common import base_config, select_preset
from configs.ns2_model import model_config

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
    # two frame buckets up to 8 s and one token bucket (2 compiled train steps, not 12). Runs:
    # docs/experiments/ns2.md.
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
