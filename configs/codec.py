"""Neural audio codec (SoundStream-style RVQ-GAN): 16 kHz, hop 200, 16 quantizers x 1024 codes.

    python launch/train.py --config=configs/codec.py:smoke --workdir=/tmp/codec_smoke
    python launch/train.py --config=configs/codec.py:tiny --workdir=/work/runs/codec_tiny \
        --config.data.dataset_dir=/work/data/shared/1.0.0 --config.data.train_splits=train,cathy \
        --config.data.eval_split=dev
    python launch/train.py --config=configs/codec.py:paper --dry_run

With no ``--config.data.dataset_dir`` the embedded synthetic corpus is generated and prepared on
first use (smoke: 24 utterances, about 10 s; tiny and larger: 480 utterances). Re-running the same
command resumes; ``--config.total_steps=N`` extends a finished run. Then:
``python launch/codec.py resynth --checkpoint RUN in.wav out.wav``,
``python launch/codec.py encode-dataset --checkpoint RUN DATA/<name>/1.0.0 OUT/1.0.0`` and
``python launch/evaluate.py codec --checkpoint RUN --data DATA/<name>/1.0.0 --out R.json``.

Hardware and measured cost (2 shared CPU cores, load average 8-10 from other jobs, XLA CPU):
- smoke: 0.25M params; step 0.3 s after a 75 s compile; tests/test_codec.py trains it 12 steps.
- tiny: channels 8, 0.81M generator parameters; 27.6 GFLOP per step (XLA cost analysis, both
  branches of the GAN switch); an 18-minute niced compile (set JAX_COMPILATION_CACHE_DIR so
  resumes skip it). Measured on ../shared/data (speechocean762 train + cathy, 2.2 h), batch 8 x
  0.4 s crops = 3.2 audio-s per step (metrics.jsonl ``steps_per_sec``): 1.5-1.7 steps/s before
  the GAN starts (about 5 audio-s/s), 0.39 steps/s with the discriminators (1.25 audio-s/s),
  0.16-0.22 when the 2 cores are shared with two other jobs. The 1800 steps are about 45 min of
  the 2-core machine alone (10 min before the GAN, 35 min after). Dev speakers (50 utterances,
  ``launch/evaluate.py codec``): PESQ-WB 1.14, STOI 0.69-0.70, mel L1 0.71 at 4, 8 and 16
  quantizers alike (3.2-12.8 kbps), against Opus at 4.4 / 5.5 / 11.9 kbps: PESQ 1.43 / 2.29 /
  3.97, STOI 0.67 / 0.90 / 0.97. Rough, and the finer quantizers add nothing:
  the 8-channel decoder, not the bitrate, is the limit at this budget (dev PESQ 1.10 at step
  600, 1.12 at 1200, 1.14 at 1800).
  The same preset with channels 16 measured 11 s per step with the GAN on (57 GFLOP).
- base: one GPU; paper: the paper's setting (8 GPUs x 200 clips, 440K steps, Adam 2e-4).
- ``--config.model.kind=spectral``: the frame-rate codec (``models/codec_spectral.py``: STFT ->
  ConvNeXt at 80 Hz -> RVQ -> ConvNeXt -> iSTFT); ``model.channels`` is then its width and
  ``model.layers`` its (encoder, decoder) depths. Width 256, depths (4, 8): 6.2M generator
  parameters (encoder 2.4M, decoder 3.8M), yet 1.65-1.7 steps/s at batch 8 x 1 s crops without
  the GAN on the 2 cores alone (13 audio-s/s, about 2.6x the waveform tiny's 5 audio-s/s with
  0.81M parameters). ``launch/benchmark.py --presets tiny_spectral --tasks codec``: 33.2 GFLOP
  per step (both branches of the GAN switch; 4.2 GFLOP per audio second against 8.6 for the
  waveform tiny), 0.65 s per step with another job beside it, 28% of the measured float32
  matmul rate. On the quickstart corpus (embedded espeak speech, 16 held-out utterances
  resynthesized, ``launch/evaluate.py tts --ground_truth_only --codec_checkpoint``), 600 steps
  (6 min): moonshine WER 0.48, speaker similarity 0.76-0.78 (ground truth 0.23 / 0.92), against
  WER 1.00 / similarity 0.47 for the waveform tiny after the quickstart's former 320 steps
  (also 6 min). The quickstart uses it (``launch/quickstart.py``).

Scale-out (``--compile_only`` on 8 simulated CPU devices, measured; see launch/train.py): smoke,
batch 8 x 8 frames, float32: 1.82 GFLOP per step (both branches of the GAN switch), 113.1 MB per
device on data=8 and 110.8 MB on data=2 x fsdp=4 (XLA heap peak 36.8 / 34.6 MB; the replicated EMA
codebooks, 33.5 MB, dominate at this size), compiled in 85 s / 63 s. The paper preset (batch 1600
x 1 s, bf16 compute, 44.1M parameters with the discriminators) on data=8: 72.5 GB per device
(arguments 0.75 GB, temporaries 71.8 GB: activations of 200 one-second clips per device, no
rematerialisation), 443 TFLOP per step (55.4 per device); compiled in 306 s with LLVM optimisation
skipped (``--compile_only`` does that on CPU), 6.4 GB resident. Compiled by XLA's TPU compiler
for 8 TPU v5p chips (``--compile_topology=v5p:2x2x2``, libtpu, no TPU) on data=8: 32.6 GB per
chip (XLA heap peak 31.9 GB; temporaries 31.8 GB), 408 TFLOP per step (51.0 per chip), compiled
in 1697 s. So the paper's 8 x 200 clips fit a v5p chip (95 GB) easily and an 80 GB GPU by the CPU
backend's count only just: use fsdp or a smaller per-device batch on smaller ones. The base and
paper presets compute in bf16.

Expected: ``generator/mel_loss`` (log-mel L1, mean over the FFT scales) falls from the start of
training (the smoke test asserts a 15% drop within 12 steps on a fixed batch);
``eval/{pesq,stoi,mel_distance,si_sdr}_q{4,8,16}`` land in metrics.jsonl every ``eval_every``
steps, with audio and mel PNGs in RUN/samples/step_K/. Quality numbers of the tiny run on the
shared data are reported with the run (RUN/eval_dev/codec_vs_opus.md), not guessed here.
Parameter counts (``--dry_run``): paper 27.4M generator (encoder 13.2M + decoder 14.2M; the
paper's "about 27M") plus 4.2M EMA codebook entries that are state, not parameters; the
discriminators (16.7M) are reported apart.
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
        # No GAN to steady: Adam with ordinary betas and a higher rate (measured, docstring).
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
