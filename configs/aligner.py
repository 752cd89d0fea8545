"""Built-in forced aligner: a model of p(token | frame) trained with the forward-sum loss, whose
emissions Viterbi-align transcripts to codec frames (durations for NaturalSpeech 2 without any
external aligner). ``model.kind`` picks the model:

  * "attention" (default; ``align/attention.py``): RAD-TTS-style text-conditioned alignment,
    log-softmax over the utterance's tokens of -|query(mel_t) - key(token_n)|^2.
  * "ctc" (presets ``smoke_ctc``, ``tiny_ctc``; ``align/ctc.py``): a phoneme recogniser (CTC +
    forward-sum + flat start) whose posteriors are gathered at the transcript's ids.

    python launch/train.py --config=configs/aligner.py:tiny --workdir=/tmp/aligner_tiny
    python launch/train.py --config=configs/aligner.py:base --workdir=runs/aligner \
        --config.data.examples_path=data/aligner_examples.npz --config.model.vocab_size=NPHONES

For English corpora ``launch/prepare_data.py`` now defaults to pocketsphinx's pretrained en-us
model instead (``--aligner=auto``; ``align/sphinx.py``): on ../shared/data this aligner's
emissions were no better than uniform on speechocean762's accented speech (74-77% one-frame
consonants), pocketsphinx's 0.6% one-frame phonemes with 95% of its phones equal to ours; on
the embedded corpus the two are alike (pocketsphinx median 12.5 ms, mean 30 ms, 74% within
25 ms). ``--aligner=builtin`` keeps this one (other languages, no eval extra installed).

smoke/tiny train on the generated ``synthetic_tones`` corpus (each phoneme a distinct spectral
pattern, random 2-12-frame durations, noise) and evaluate boundary errors on held-out utterances;
base/paper train on a real corpus handed over as an .npz (``aligner_task.save_examples``; the
Python API ``naturalspeech2_jax.align.api.train_aligner`` writes it and trains in one call).

Hardware and Expected results (2 CPU cores, shared with other jobs, unless noted):
  * smoke (attention, 0.07M params): 120 steps in about 1 minute (mostly compilation); on
    held-out synthetic utterances median boundary error 0 ms, 100% within 25 ms (was 12.5 ms,
    98% with the former wide model).
    smoke_ctc: median 0, mean about 2 ms, >= 99% within 25 ms (3 seeds).
  * tiny (attention, 3 undilated mel layers, no text context; 0.13M params with 243 tokens):
    what ``launch/prepare_data.py --durations=aligner`` trains on a corpus (speech buckets),
    about 3 steps/s. Embedded corpus (``launch/quickstart.py --durations=aligner``: 256 espeak
    utterances, 0.3 h; scored against the exact timings on 64 of them every 250 steps; median /
    mean boundary error in ms, share within 25 ms):

        steps                             250           500           1000        2000
        this model                        12.5/20/0.84  12.5/22/0.81  25/26/0.73  25/29/0.67
        + 3 text conv blocks              25/39/0.69    25/36/0.70    25/38/0.67  25/42/0.60
        + 6 mel layers, k5, dil. 1-8      25/44/0.56    38/56/0.40    50/70/0.30  88/102/0.17
          (the former tiny; the last column over all 256 utterances)

    The wide model drifts: with a query that sees +-36 frames and keys that see +-3 tokens, a
    shifted alignment explains the frames as well as the true one, and training sharpens it
    (the first phonemes squeezed, the rest late: signed error -7 frames in the first fifth of
    an utterance, +11 in the last). It costs NS2 its intelligibility: the quickstart's NS2 on
    those durations had WER 1.20 against 0.58 on the exact timings (same corpus, codec and
    budget; speaker similarity 0.68 against 0.66). The Viterbi prior does not matter once the
    attention is trained (the same boundaries with prior weight 0, 0.5 or 1). 1000 steps: the
    drift is slow but still there, so tiny stops early. This tiny at 1000 steps over all 256
    utterances: median 12.5 ms, mean 25 ms, 73% within 25 ms (5 min of training), phonemes
    median 6 frames (as exact), 8% one frame (exact 1.6%); the quickstart's NS2 on its
    durations: WER 0.80 (exact timings 0.58, the former aligner 1.20).
    Real speech (../shared/data: 2339 utterances, 67 non-native speakers + one native, 2.7 h;
    no exact timings) was tuned with the former model on the card's ``duration_stats`` (median
    8 frames, 15.5% one-frame phonemes at 2000 steps, 37.6% at 600): a proxy that the espeak
    measurement above shows can look good while the boundaries drift.
  * base (0.8M): one GPU, 20-50 h of speech as .npz; paper (3.1M): one GPU, a large corpus
    (hundreds of hours). On real speech check `eval/confidence` (mean per-token log-prob of the
    Viterbi path), the dataset card's ``duration_stats`` (median frames per phoneme, share of
    one-frame phonemes, share of pause frames) and, where a corpus has exact timings, the
    boundary errors (``api.boundary_errors_ms``).
"""

from __future__ import annotations

import ml_collections

from configs.common import base_config, select_preset
from naturalspeech2_jax.align import aligner_task  # noqa: F401  (registers the "aligner" task)

# Real-speech buckets (frames, tokens): up to 20 s and 256 phonemes; at most 5 jit programs.
SPEECH_BUCKETS = ((256, 48), (512, 96), (800, 128), (1200, 192), (1600, 256))
# Synthetic utterances have 8-26 tokens of 2-12 frames (<= 312 frames).
SYNTH_BUCKETS = ((128, 32), (192, 32), (320, 32))

PRESETS = {
    # name: (model kind, dim, conv_layers, attn_layers, heads, total_steps, batch, lr, data kind)
    # attn_layers/heads: CTC model only; the attention model's text encoder has text_layers.
    # attention presets: 3 undilated kernel-3 mel layers (a query sees +-3 frames) and no text
    # context (a key is its token's identity): with context on either side the forward-sum
    # optimum drifts to shifted alignments (the docstring's measurements)
    "smoke": ("attention", 64, 3, 1, 2, 120, 16, 3e-3, "synthetic_tones"),
    # tiny: what prepare_data trains on a corpus
    "tiny": ("attention", 96, 3, 2, 4, 1000, 16, 2e-3, "synthetic_tones"),
    "base": ("attention", 256, 3, 4, 4, 20000, 32, 1e-3, "npz"),
    "paper": ("attention", 512, 3, 6, 8, 60000, 64, 5e-4, "npz"),
    # the phoneme-recogniser aligner (see the docstring for why it is no longer the default)
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
