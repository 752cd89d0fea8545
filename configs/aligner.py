"""Built-in forced aligner: p(token | frame) trained with the forward-sum loss, Viterbi-aligning
transcripts to codec frames (NS2 durations without an external aligner). ``model.kind``:
"attention" (default, RAD-TTS style; ``align/attention.py``) or "ctc" (smoke_ctc, tiny_ctc).

    python launch/train.py --config=configs/aligner.py:tiny --workdir=/tmp/aligner_tiny
    python launch/train.py --config=configs/aligner.py:base --workdir=runs/aligner \
        --config.data.examples_path=data/aligner_examples.npz --config.model.vocab_size=NPHONES

smoke/tiny train on the synthetic_tones corpus; base/paper on a real corpus as .npz
(``align.api.train_aligner``); ``launch/prepare_data.py --aligner=builtin`` trains tiny on a
corpus (English defaults to pocketsphinx). Hardware: 2 CPU cores (base/paper: one GPU).
Expected: smoke median boundary error 0 ms; tiny (1000 steps, 5 min) on the embedded espeak
corpus median 12.5 ms, mean 25 ms, 73% within 25 ms.
Run history: docs/experiments/aligner.md.
"""

from __future__ import annotations

import ml_collections

from configs.common import base_config, select_preset

# Real-speech buckets (frames, tokens): up to 20 s and 256 phonemes; at most 5 jit programs.
SPEECH_BUCKETS = ((256, 48), (512, 96), (800, 128), (1200, 192), (1600, 256))
# Synthetic utterances have 8-26 tokens of 2-12 frames (<= 312 frames).
SYNTH_BUCKETS = ((128, 32), (192, 32), (320, 32))

PRESETS = {
    # name: (model kind, dim, conv_layers, attn_layers, heads, total_steps, batch, lr, data kind)
    # attn_layers/heads: CTC model only; the attention model's text encoder has text_layers.
    # attention presets: 3 undilated kernel-3 mel layers (a query sees +-3 frames) and no text
    # context (a key is its token's identity): with context on either side the forward-sum
    # optimum drifts to shifted alignments (measured: docs/experiments/aligner.md)
    "smoke": ("attention", 64, 3, 1, 2, 120, 16, 3e-3, "synthetic_tones"),
    # tiny: what prepare_data trains on a corpus
    "tiny": ("attention", 96, 3, 2, 4, 1000, 16, 2e-3, "synthetic_tones"),
    "base": ("attention", 256, 3, 4, 4, 20000, 32, 1e-3, "npz"),
    "paper": ("attention", 512, 3, 6, 8, 60000, 64, 5e-4, "npz"),
    # the phoneme-recogniser aligner (why it is no longer the default: docs/experiments/aligner.md)
    "smoke_ctc": ("ctc", 64, 4, 1, 2, 120, 16, 3e-3, "synthetic_tones"),
    "tiny_ctc": ("ctc", 96, 6, 2, 4, 1500, 16, 2e-3, "synthetic_tones"),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = select_preset(PRESETS, arg, __name__)
    model_kind, dim, convs, attn, heads, steps, batch, lr, kind = PRESETS[preset]
    synthetic = kind == "synthetic_tones"
    c = base_config()
    c.preset = preset
    c.task = "aligner"
    c.total_steps = steps
    c.batch_size = batch
    c.model = ml_collections.ConfigDict(
        dict(
            kind=model_kind,  # "attention" (text-conditioned) or "ctc" (phoneme recogniser)
            n_mels=80,
            vocab_size=16 if synthetic else 256,  # real data: the phoneme vocabulary size
            dim=dim,
            conv_layers=convs,
            # mel encoder. Attention model: kernel 3, no dilation (+-3 frames at 3 layers): a
            # wide context (kernel 5, dilations 1-8, +-36 frames) lets a query stand for a
            # neighbouring phoneme, and the alignment drifted with training (espeak: mean
            # boundary error 44 ms at 250 steps, 102 ms at 2000). CTC model: kernel 5,
            # dilations 1, 2, 4, 8 (a recogniser needs the context).
            kernel=3 if model_kind == "attention" else 5,
            attn_layers=attn,
            heads=heads,
            dropout=0.0 if synthetic else 0.1,
            # attention model: conv blocks over the token sequence before the keys. 0: a key is
            # its token's embedding (3 blocks let a key take on a neighbour's sound: mean
            # boundary error 42 ms at 2000 steps against 29 ms with none)
            text_layers=0,
            dilation_cycle=1 if model_kind == "attention" else 4,  # dilations 1 .. 2^(cycle-1)
        )
    )
    c.data = ml_collections.ConfigDict(
        dict(
            kind=kind,  # "npz" (examples_path) or "synthetic_tones"
            examples_path="",
            # smoke: two buckets = two compilations (its test budget is mostly compile time)
            buckets=(SYNTH_BUCKETS[1:] if preset.startswith("smoke") else SYNTH_BUCKETS)
            if synthetic
            else SPEECH_BUCKETS,
            eval_examples=64,
            seed=0,
            # synthetic_tones only:
            num_examples=512 if preset.startswith("smoke") else 2048,
            synth_tokens=(6, 24),
            synth_frames_per_token=(2, 12),
            synth_noise=0.6,
            # token ids that may take zero frames (word boundaries, silences, punctuation);
            # launch/prepare_data.py sets them from the corpus' phoneme vocabulary
            optional_ids=(),
        )
    )
    # flat start: CE on a uniform segmentation, weight decaying to 0 over the first steps.
    c.loss = ml_collections.ConfigDict(
        dict(
            forward_sum_weight=1.0,
            flat_start_weight=1.0,
            flat_start_steps=max(steps // 2, 60),
            # beta-binomial diagonal prior on the forward-sum emissions and in Viterbi: without
            # it, real speech collapsed to one stretched token (83% of phonemes got one frame)
            prior_weight=1.0,
            prior_scale=1.0,
            # pause (optional) tokens pay up to pause_penalty nats per frame on loud frames
            # (energy above pause_level of the utterance's range, ramping over 0.2): on real
            # speech a weak acoustic model otherwise let word-boundary pauses swallow words
            pause_penalty=10.0,
            pause_level=0.3,
            # spoken tokens pay edge_penalty nats per frame on the leading/trailing silence
            # (frames outside ctc.speech_span, 3 frames of margin): see ctc.edge_log_gate
            edge_penalty=10.0 if model_kind == "attention" else 0.0,
            edge_level=0.5,  # speech starts/ends where relative_energy first/last exceeds it
            # attention model: weight of an auxiliary CTC head on the mel encoder (0: none)
            ctc_weight=0.0,
        )
    )
    c.optim.lr = lr
    c.optim.warmup_steps = 10 if preset.startswith("smoke") else 200
    c.optim.schedule = "cosine" if synthetic else "inverse_sqrt"
    c.optim.min_lr_ratio = 0.05
    c.ema_decay = 0.0 if synthetic else 0.999
    c.log_every = 25 if synthetic else 100
    c.eval_every = steps if synthetic else 2000
    c.checkpoint_every = steps if synthetic else 2000
    return c
