"""Neural audio codec (SoundStream-style RVQ-GAN): 16 kHz, hop 200, 16 quantizers x 1024 codes.

    python launch/train.py --config=configs/codec.py:smoke --workdir=/tmp/codec_smoke
    python launch/train.py --config=configs/codec.py:tiny_spectral --workdir=/work/runs/codec \
        --config.data.dataset_dir=/work/data/shared/1.0.0 --config.data.train_splits=train,cathy \
        --config.data.eval_split=dev
    python launch/train.py --config=configs/codec.py:paper --dry_run

Presets: smoke (tests), tiny (waveform), tiny_spectral (``model.kind=spectral``: STFT, ConvNeXt at
80 Hz, iSTFT, no GAN; the quickstart's and NS2's codec), base (1 GPU), paper (8 GPUs; both bf16).
No ``data.dataset_dir``: the embedded corpus. Then ``launch/codec.py resynth|encode-dataset``.
Hardware: 2 CPU cores, tiny_spectral ~1.7 steps/s. Expected: after 600 steps (6 min) on the
embedded corpus its resynthesis has WER 0.48 (ground truth 0.23; the waveform tiny 1.00).
Run history (throughput, quality against Opus, compiled memory/FLOPs): docs/experiments/codec.md.
"""

from __future__ import annotations

import ml_collections

from configs.common import base_config, select_preset

PRESETS = {
    # name: generator channels, disc wave channels, disc stft channels, crop frames, batch, steps
    "smoke": dict(ch=4, msd=(4, 8, 16), stft=4, crop=8, batch=8, steps=20),
    "tiny": dict(ch=8, msd=(8, 32, 64), stft=8, crop=32, batch=8, steps=1800),
    # The frame-rate codec (model.kind="spectral"): ConvNeXt width 256, depths (4, 8), 1 s crops;
    # the GAN off (start_step below); every other setting as "tiny". The quickstart's codec.
    "tiny_spectral": dict(
        ch=256,
        msd=(8, 32, 64),
        stft=8,
        crop=80,
        batch=8,
        steps=4000,
        like="tiny",
        kind="spectral",
        layers=(4, 8),
        disc_start=10**9,
    ),
    "base": dict(ch=32, msd=(16, 64, 256, 512), stft=32, crop=80, batch=16, steps=200_000),
    "paper": dict(ch=58, msd=(16, 64, 256, 1024), stft=32, crop=80, batch=1600, steps=440_000),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = select_preset(PRESETS, arg, __name__)
    p = PRESETS[preset]
    # A variant preset takes every setting not in its row from the preset it is "like".
    size = p.get("like", preset)
    small = size in ("smoke", "tiny")
    c = base_config()
    c.preset = preset
    c.task = "codec"
    c.total_steps = p["steps"]
    c.batch_size = p["batch"]

    c.model = ml_collections.ConfigDict(
        dict(
            channels=p["ch"],
            strides=(2, 4, 5, 5),  # product = 200 samples = one 12.5 ms frame at 16 kHz
            # Smoke keeps one unit per stage: XLA compile time on CPU grows with the conv count.
            dilations=(1,) if size == "smoke" else (1, 3, 9),
            kernel_size=7,
            latent_dim=256,
            num_quantizers=16,
            codebook_size=1024,
            ema_decay=0.99,  # codebook EMA decay
            # EMA usage (codes per batch) below which a code is replaced by a batch residual;
            # scale with frames per batch (tiny: 256 frames spread over 1024 codes).
            dead_code_threshold={"smoke": 0.01, "tiny": 0.01, "base": 0.05, "paper": 0.5}[size],
            kmeans_iters=0 if size == "smoke" else 10,  # 0 = random-sample initialisation
            quantizer_dropout=1.0,  # probability of training with a random 1..16 quantizers
            weight_norm=True,
            # "wave": SoundStream's waveform convolutions (channels double per stride stage);
            # "spectral": frame-rate ConvNeXt stacks behind an STFT/iSTFT, width ``channels``,
            # depths ``layers`` = (encoder, decoder), MLP width ``mlp_ratio`` x channels.
            kind=p.get("kind", "wave"),
            layers=p.get("layers", (4, 8)),
            mlp_ratio=3,
            # Spectral decoder: "absolute" phase per frame (Vocos) or "cumulative" (per-frame
            # advances summed over time: coherent without a GAN; models/codec_spectral.py).
            phase=p.get("phase", "absolute"),
        )
    )
    c.disc = ml_collections.ConfigDict(
        dict(
            msd_scales={"smoke": 1, "tiny": 2}.get(size, 3),
            msd_channels=p["msd"],
            stft_fft_sizes=(128,) if size == "smoke" else (1024, 512, 256),
            stft_channels=p["stft"],
            # Generator-only warm-up: reconstruction first, then the GAN (cheaper and steadier).
            start_step=p.get(
                "disc_start", {"smoke": 0, "tiny": 1000, "base": 20_000, "paper": 20_000}[size]
            ),
        )
    )
    c.loss = ml_collections.ConfigDict(
        dict(
            mel_weight=15.0,
            mel_scales=(128, 512) if size == "smoke" else (64, 128, 256, 512, 1024, 2048),
            n_mels=64,
            stft_weight=1.0,
            stft_resolutions=((256, 64),)
            if size == "smoke"
            else ((2048, 512), (1024, 256), (512, 128)),
            commit_weight=1.0,
            # Compressed complex STFT loss at stft_resolutions (scores phase; 0 = off).
            complex_weight=p.get("complex", 0.0),
            adv_weight=1.0,
            fm_weight=2.0,
        )
    )
    # Generator (config.optim) and discriminator (config.optim_d): Adam, GAN betas.
    lr = 5e-4 if small else 2e-4
    for key in ("optim", "optim_d"):
        c[key] = ml_collections.ConfigDict(
            dict(
                name="adam",
                lr=lr,
                b1=0.5,
                b2=0.9,
                eps=1e-8,
                weight_decay=0.0,
                schedule="constant",
                warmup_steps=10 if small else 1000,
                clip_norm=10.0,
                decay_steps=0,
                min_lr_ratio=0.0,
            )
        )
    if p.get("kind") == "spectral":
        # No GAN to steady: Adam with ordinary betas and a higher rate (docs/experiments/codec.md).
        c.optim.update(lr=1e-3, b1=0.8, b2=0.99)
    c.ema_decay = 0.0 if size == "smoke" else (0.99 if size == "tiny" else 0.999)
    # Accelerator presets: bf16 convolutions, float32 master weights, optimizer state, codebooks,
    # STFT/mel losses and output audio (tests/test_scale.py bounds the bf16 drift on NS2).
    c.precision.compute_dtype = "float32" if small else "bfloat16"

    c.data = ml_collections.ConfigDict(
        dict(
            # DIR/<name>/<version> of a prepared dataset (launch/prepare_data.py); empty = the
            # embedded synthetic corpus, generated and prepared on first use (no data argument).
            dataset_dir="",
            embedded_size="smoke" if size == "smoke" else "default",
            train_splits="train",  # comma-separated; the shared data: "train,cathy"
            eval_split="heldout",  # held-out speakers; the shared data: "dev"
            crop_frames=p["crop"],
            num_threads=2,
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(
            num_examples=2 if size == "smoke" else 8,
            max_frames=40 if size == "smoke" else 240,
            num_samples=1 if size == "smoke" else 2,
            quantizers=(4, 8, 16),
            stats_examples=4 if size == "smoke" else 64,
        )
    )
    c.log_every = {"smoke": 5, "tiny": 50}.get(size, 100)
    c.eval_every = {"smoke": 0, "tiny": 600}.get(size, 5000)
    c.checkpoint_every = {"smoke": 10, "tiny": 300}.get(size, 5000)
    return c
