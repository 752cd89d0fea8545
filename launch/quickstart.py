"""The whole pipeline in one command, resumable: corpus -> data -> codec -> codes -> NS2 -> samples.

    python launch/quickstart.py --workdir=W [--preset=smoke|tiny] [--corpus=PATH]
        [--durations=auto|aligner|exact]
    python launch/quickstart.py --workdir=W --preset=real [--shared_data=../shared/data]

Without ``--corpus`` it generates the embedded corpus (a multi-speaker English corpus synthesised
by espeak-ng, which ships with pip) under ``W/corpus``. Stages and what they leave:

    corpus   W/corpus                 the embedded corpus (skipped with --corpus)
    data     W/data/quickstart/1.0.0  prepared dataset (phonemes, durations, pitch)
    codec    W/codec                  codec run (launch/codec.py --checkpoint W/codec ...)
    codes    W/codes/quickstart_codes/1.0.0   the dataset plus the codec's codes
    ns2      W/ns2                    NS2 run: launch/synthesize.py --checkpoint W/ns2 accepts it
    samples  W/samples                held-out-speaker sentences (wav + png) and pairs.tsv
    eval     W/eval                   WER (moonshine), speaker similarity, prosody: report.json/.md
    export   W/export                 codec + NS2 weights as one folder (launch/export.py)

``--preset=real`` is the real-speech recipe (issue 27): ``--shared_data`` (default
../shared/data) is linked into split folders with 25 librispeech_tc100 readers held out
(``data/shared_corpus.py``), the untranscribed readers are transcribed, and the samples and eval
stages add the native hold-out's same-utterance pairs, voice conversions and the codec beside Opus
(``W/eval/{report,native,conversion,codec}.md``).

Each stage writes a ``W/<stage>.done`` marker; running the command again skips finished stages
and resumes an interrupted training stage from its last checkpoint (XLA compilations are cached
in ``W/xla_cache``, so a resume does not compile again). SIGTERM or Ctrl-C during a training stage
saves its checkpoint and exits with status 130, leaving that stage (and the ones after it) to the
next run.

Budgets (``QUICKSTART``: the codec and NS2 step counts are quickstart-specific, smaller than the
configs' presets, so the whole pipeline fits the time below on 2 CPU cores): ``smoke`` checks
that every stage runs (noise comes out; 3 min 12 s); ``tiny`` is the README's demo: 17-28 min on
the 2 cores alone from a fresh clone (docs/experiments/ns2.md has the runs). Its samples are
sentences a recogniser mostly gets (held-out WER 0.40-0.58 on 8 sentences of 4 speakers; the
codec's own resynthesis 0.35-0.38, the espeak recordings 0.25), e.g.
"Mace said the mascot was 21% cheaper than last year." for "Grace said the basket ...";
README.md has the table.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable

from absl import app, flags
from etils import epath

from naturalspeech2_jax import cli, host_memory
from naturalspeech2_jax.data.shared_corpus import NATIVE_HELDOUT

_WORKDIR = flags.DEFINE_string("workdir", None, "Where every stage writes its outputs.")
_PRESET = flags.DEFINE_enum("preset", "tiny", ["smoke", "tiny", "real"], "Size of every stage.")
_CORPUS = flags.DEFINE_string("corpus", None, "A corpus on disk instead of the embedded one.")
_SHARED = flags.DEFINE_string(
    "shared_data",
    None,
    "The real-speech recipe's corpora (speechocean762_adult, cathy, "
    "librispeech_tc100): default ../shared/data with --preset=real.",
)
_LAYOUT = flags.DEFINE_string("layout", None, "Corpus layout when it cannot be detected.")
_DURATIONS, _ALIGNER = cli.define_alignment_flags()

log = logging.getLogger("quickstart")

# Per preset: the embedded corpus (speakers, utterances per speaker, held-out speakers), the
# codec and NS2 configs (preset + overrides) and the sampling of the samples stage.
QUICKSTART = {
    "smoke": dict(
        corpus=(6, 6, 2),
        codec=("smoke", {"total_steps": 6, "checkpoint_every": 6}),
        codes_bucket_frames=400,  # one encoder program for the whole (short) corpus
        # One frame/token bucket: one compiled training step (each costs a minute on 2 cores).
        ns2=("smoke", {"total_steps": 4, "checkpoint_every": 4, "data.buckets": (400,),
                       "data.token_buckets": (96,)}),
        samples=dict(count=2, sampler="dpm++2m", steps=4),
        eval=dict(asr=(), speaker=False),
    ),
    "tiny": dict(
        corpus=(16, 16, 4),
        # The frame-rate codec (configs/codec.py:tiny_spectral, no GAN): every layer at 80 Hz, so
        # its 6.2M parameters see 1 s crops at ~1.7 steps/s on 2 cores; the waveform tiny reached
        # no intelligibility in the same minutes (configs/codec.py has the comparison).
        codec=("tiny_spectral", {"total_steps": 800, "checkpoint_every": 200, "eval_every": 0,
                                 "log_every": 25}),
        codes_bucket_frames=160,
        # The slimmer tiny of configs/diffusion.py:tiny_speech (6 WaveNet layers, 3-layer
        # predictors) at batch 4 in one bucket: ~4x the steps of tiny.
        ns2=("tiny_speech", {"total_steps": 1200, "checkpoint_every": 200, "eval_every": 0,
                             "batch_size": 4, "data.buckets": (640,), "optim.warmup_steps": 100,
                             "log_every": 25}),
        samples=dict(count=8, sampler="dpm++2m", steps=25),
        eval=dict(asr=("moonshine",), speaker=True),
    ),
    # The real-speech recipe (--shared_data; issue 27): 294 training voices measured. Budgets sized
    # so the whole recipe fits one sitting on 2 cores (2 h 14 min measured: data 35, codec 27, NS2
    # 54, rest 18).
    "real": dict(
        native_heldout=25,  # librispeech_tc100 readers no model trains on (a native check)
        data=dict(transcribe=True, max_edge_silence=0.2),
        # tiny_spectral on all the real audio (3.2 h), the rate decayed to the end (cosine): the
        # complex loss and cumulative phase measured worse at 600 steps (docs/experiments/codec.md).
        codec=("tiny_spectral", {"total_steps": 2400, "checkpoint_every": 300, "eval_every": 0,
                                 "log_every": 50, "optim.schedule": "cosine",
                                 "optim.min_lr_ratio": 0.1}),
        codes_bucket_frames=160,
        # The 6.4M tiny_speech variant of docs/experiments/ns2.md (WER 0.425 on dev after 90 min).
        ns2=("tiny_speech", {"total_steps": 2400, "checkpoint_every": 250, "eval_every": 0,
                             "log_every": 50, "model.wn_layers": 12, "model.enc_layers": 3,
                             "model.cond_drop_prob": 0.2, "ema_decay": 0.999}),
        samples=dict(count=40, sampler="dpm++2m", steps=25, guidance_scale=2.0, pairs="prepared"),
        native=dict(sampler="dpm++2m", steps=25),
        conversion=dict(count=20, sampler="dpm++2m", steps=25),
        eval=dict(asr=("moonshine",), speaker=True, dnsmos=True),
        codec_eval=dict(limit=50, quantizers=(4, 8, 16)),
        # check: the bf16 export's generated row on the same pairs and seeds (W/eval/export.md).
        export=dict(dtype="bfloat16", check=True),
    ),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Options:
    """What a stage needs besides the workdir (the flags, for use from Python and notebooks)."""

    preset: str = "tiny"
    corpus: str | None = None  # a corpus on disk instead of the embedded one
    shared_data: str | None = None  # the real-speech recipe's ../shared/data
    layout: str | None = None
    durations: str = "auto"  # auto | aligner | exact (PrepareOptions.durations)
    aligner: str = "auto"  # auto | pocketsphinx | builtin (PrepareOptions.aligner)


def _config(module: str, preset: str, overrides: dict):
    import importlib

    config = importlib.import_module(f"configs.{module}").get_config(preset)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _done(workdir: epath.Path, stage: str) -> dict:
    return json.loads((workdir / f"{stage}.done").read_text())


def stage_corpus(workdir: epath.Path, opts: Options) -> dict:
    if opts.shared_data:  # split folders of links: the native hold-out is its own split
        from naturalspeech2_jax.data.shared_corpus import link_corpora

        heldout = QUICKSTART[opts.preset].get("native_heldout", 25)
        return link_corpora(opts.shared_data, workdir / "corpus", heldout=heldout)
    if opts.corpus:
        return {"corpus": opts.corpus}
    from naturalspeech2_jax.data.synthetic import generate_corpus

    speakers, utts, heldout = QUICKSTART[opts.preset]["corpus"]
    manifest = generate_corpus(
        workdir / "corpus", num_speakers=speakers, utts_per_speaker=utts, num_heldout=heldout
    )
    return {"corpus": str(workdir / "corpus"), "utterances": manifest.get("num_utterances")}


def stage_data(workdir: epath.Path, opts: Options) -> dict:
    from naturalspeech2_jax.data.prepare import prepare_corpus

    if opts.shared_data:  # transcribe the untranscribed readers, cut long edge silences
        extra = QUICKSTART[opts.preset].get("data", {"transcribe": True})
        result = prepare_corpus(
            _done(workdir, "corpus")["corpora"], workdir / "data", name="quickstart",
            durations=opts.durations, aligner=opts.aligner, **extra,
        )  # fmt: skip
    elif opts.corpus:  # a real corpus: durations from TextGrids or the built-in aligner
        result = prepare_corpus(
            opts.corpus, workdir / "data", layout=opts.layout, name="quickstart",
            durations=opts.durations, aligner=opts.aligner,
        )  # fmt: skip
    else:  # the embedded corpus ships exact timings; DIO pitch suffices for synthetic speech
        # (--durations=aligner aligns it anyway and scores the aligner against those timings)
        result = prepare_corpus(
            str(workdir / "corpus"),
            workdir / "data",
            name="quickstart",
            durations="exact" if opts.durations == "auto" else opts.durations,
            aligner=opts.aligner,
            pitch_method="dio",
        )
    return {"dataset_dir": str(result.dataset_dir)}


def _splits(dataset_dir: str) -> tuple[str, str]:
    """(comma-separated training splits, held-out split) of a prepared dataset."""
    from naturalspeech2_jax.inference.codes_dataset import dataset_info

    _, splits = dataset_info(dataset_dir)
    held = [s for s in splits if s in ("heldout", "dev", "test", "validation")]
    # The native hold-out (--shared_data) is never trained on, nor the evaluation split.
    train = [s for s in splits if s not in held and s != NATIVE_HELDOUT] or splits
    return ",".join(train), (held[0] if held else train[0])


def _train(workdir: epath.Path, opts: Options, stage: str, configs: str, data_stage: str) -> dict:
    """Train ``QUICKSTART[preset][stage]`` (a configs/<configs>.py preset with overrides) into
    ``W/<stage>`` on the dataset that stage ``data_stage`` wrote."""
    from naturalspeech2_jax.train import loop

    dataset_dir = _done(workdir, data_stage)["dataset_dir"]
    train_splits, heldout = _splits(dataset_dir)
    name, overrides = QUICKSTART[opts.preset][stage]
    config = _config(configs, name, {
        **overrides, "data.dataset_dir": dataset_dir, "data.train_splits": train_splits,
        "data.eval_split": heldout, "num_devices": 1, "mesh.data": 1,
    })  # fmt: skip
    loop.train(config, workdir / stage)
    return {"checkpoint": str(workdir / stage), "steps": int(config.total_steps)}


def stage_codec(workdir: epath.Path, opts: Options) -> dict:
    return _train(workdir, opts, "codec", "codec", data_stage="data")


def stage_codes(workdir: epath.Path, opts: Options) -> dict:
    from naturalspeech2_jax.data import embedded
    from naturalspeech2_jax.data.tfds_builder import VERSION
    from naturalspeech2_jax.inference.codes_dataset import encode_dataset

    dataset_dir = _done(workdir, "data")["dataset_dir"]
    out = workdir / "codes" / "quickstart_codes" / VERSION
    if out.exists():  # an interrupted encoding: start this (minutes-long) stage again
        shutil.rmtree(out)
    bucket_frames = QUICKSTART[opts.preset]["codes_bucket_frames"]
    encode_dataset(workdir / "codec", dataset_dir, out, bucket_frames=bucket_frames)
    if not opts.corpus:  # launch/train.py --config=configs/diffusion.py finds it from now on
        embedded.register_codes_dataset(
            "smoke" if opts.preset == "smoke" else "default", str(out), str(workdir / "codec")
        )
    return {"dataset_dir": str(out)}


def stage_ns2(workdir: epath.Path, opts: Options) -> dict:
    return _train(workdir, opts, "ns2", "diffusion", data_stage="codes")


def stage_samples(workdir: epath.Path, opts: Options) -> dict:
    from naturalspeech2_jax.inference import Synthesizer
    from naturalspeech2_jax.inference import samples as S
    from naturalspeech2_jax.inference.codes_dataset import dataset_info

    p = QUICKSTART[opts.preset]
    q = p["samples"]
    synth = Synthesizer.from_checkpoint(workdir / "ns2")
    dataset_dir = _done(workdir, "codes")["dataset_dir"]
    _, heldout = _splits(dataset_dir)
    out = workdir / "samples"
    if q.get("pairs") == "prepared":  # launch/evaluate.py tts's pairs: 3 s prompts, cut on phonemes
        from naturalspeech2_jax.evaluation.corpus import pairs_from_prepared

        pairs = pairs_from_prepared(dataset_dir, heldout, out / "audio", limit=q["count"])
        path = S.write_pair_samples(synth, pairs, out, sampler=q["sampler"], steps=q["steps"],
                                    guidance_scale=q.get("guidance_scale", 1.0))  # fmt: skip
    else:
        path = S.write_heldout_samples(synth, dataset_dir, heldout, out, count=q["count"],
                                       sampler=q["sampler"], steps=q["steps"])  # fmt: skip
    result = {"pairs": str(path), "sampler": q["sampler"], "steps": q["steps"]}
    if "native" in p and NATIVE_HELDOUT in dataset_info(dataset_dir)[1]:
        native = S.write_same_utterance_samples(synth, dataset_dir, NATIVE_HELDOUT,
                                                out / "native", **p["native"])  # fmt: skip
        result["native_pairs"] = str(native)
    if "conversion" in p:
        conversions = S.write_conversion_samples(synth, dataset_dir, heldout, out / "conversion",
                                                 **p["conversion"])  # fmt: skip
        result["conversions"] = str(conversions)
    return result


# What the eval stage imports for each evaluator (setup.py's "eval" extra installs them all).
_EVAL_MODULES = {"asr": ("onnxruntime", "tokenizers", "moonshine_cpp"), "speaker": ("torch",
                 "resemblyzer")}  # fmt: skip


def missing_eval_modules(workdir: epath.Path, opts: Options) -> list[str]:
    """Modules the eval stage will need but cannot import (none once that stage is done).

    Checked before the first stage, so a missing extra fails in a second, not after the training.
    """
    import importlib.util

    if (epath.Path(workdir) / "eval.done").exists():
        return []
    q = QUICKSTART[opts.preset]["eval"]
    needed = (_EVAL_MODULES["asr"] if q["asr"] else ()) + (
        _EVAL_MODULES["speaker"] if q["speaker"] else ()
    )
    return [m for m in needed if importlib.util.find_spec(m) is None]


def stage_eval(workdir: epath.Path, opts: Options) -> dict:
    from naturalspeech2_jax.evaluation import corpus, report, tts_eval
    from naturalspeech2_jax.inference.codec import Codec

    p = QUICKSTART[opts.preset]
    q = p["eval"]
    done = _done(workdir, "samples")
    config = _evaluator_config(tts_eval, q)
    # The codec's resynthesis of the ground truth is the ceiling any NS2 of this codec can reach.
    codec_object = Codec.from_checkpoint(workdir / "codec")
    codec = tts_eval.as_codec_resynthesis(codec_object)
    out = workdir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    pairs = corpus.read_pair_list(done["pairs"])
    result = evaluate_written_samples(pairs, epath.Path(done["pairs"]).parent, config, tts_eval,
                                      codec)  # fmt: skip
    _write_report(result, out / "report", report, plots=opts.preset != "smoke")
    keys = ("wer", "speaker_similarity", "dnsmos_ovrl", "seconds")
    summary = {f"{system}/{k}": v for system, row in result["systems"].items() for k, v in
               row.items() if k in keys}  # fmt: skip
    summary["report"] = str(out / "report.json")
    if "native_pairs" in done:  # similarity on native speech: no transcript to score WER against
        native_config = dataclasses.replace(config, asr=[], prosody=False)
        native_pairs = corpus.read_pair_list(done["native_pairs"])
        native = evaluate_written_samples(native_pairs, epath.Path(done["native_pairs"]).parent,
                                          native_config, tts_eval, codec)  # fmt: skip
        _write_report(native, out / "native", report, plots=False)
        summary.update({f"native/{system}/{k}": v for system, row in native["systems"].items()
                        for k, v in row.items() if k in keys})  # fmt: skip
    if "conversions" in done:
        from naturalspeech2_jax.evaluation import conversion

        vc = conversion.conversion_similarity(conversion.read_conversions(done["conversions"]))
        report.write_json(vc, out / "conversion.json")
        (out / "conversion.md").write_text(conversion.conversion_markdown(vc["summary"]) + "\n")
        summary.update({f"conversion/{k}": v for k, v in vc["summary"].items()})
    if "codec_eval" in p:
        summary.update(_codec_eval(workdir, codec_object, p["codec_eval"], out))
    return summary


def _evaluator_config(tts_eval, q: dict):
    """The preset's ``eval`` block as an EvaluatorConfig: the eval stage and the export check
    must score with the same evaluators for their rows to be comparable."""
    return tts_eval.EvaluatorConfig(asr=list(q["asr"]), speaker=q["speaker"],
                                    dnsmos=q.get("dnsmos", False))  # fmt: skip


def _write_report(result: dict, stem: epath.Path, report, plots: bool) -> None:
    """``stem``.json and .md (and, with ``plots``, PNGs under ``stem``_plots/)."""
    report.write_json(result, stem.with_suffix(".json"))
    stem.with_suffix(".md").write_text(report.markdown_report(result), encoding="utf-8")
    if plots:
        report.plot_report(result, stem.parent / f"{stem.name}_plots")


def _codec_eval(workdir: epath.Path, codec, q: dict, out: epath.Path) -> dict:
    """The codec beside Opus at its bitrates, and its codebook usage, on held-out utterances."""
    from naturalspeech2_jax.evaluation import codec_metrics, corpus, opus, report, tts_eval

    dataset_dir = _done(workdir, "data")["dataset_dir"]
    _, heldout = _splits(dataset_dir)
    names, wavs = corpus.prepared_audio(dataset_dir, heldout, q["limit"])
    backend = "ffmpeg" if opus.opus_available("ffmpeg") else "soundfile"
    have_opus = opus.opus_available(backend)
    rows = codec_metrics.codec_table(
        wavs, tts_eval.as_codec_resynthesis(codec), q["quantizers"], None if have_opus else [],
        codebook_size=codec.codebook_size, opus_backend=backend,
    )  # fmt: skip
    usage = codec_metrics.measure_codebook_usage(codec, wavs)
    result = {"rows": [r.as_dict() for r in rows], "files": names,
              "codebook_usage": [u.as_dict() for u in usage]}  # fmt: skip
    report.write_json(result, out / "codec.json")
    (out / "codec.md").write_text(
        "## Codec quality\n\n" + codec_metrics.codec_table_markdown(rows)
        + "\n\n## Codebook usage\n\n"
        + codec_metrics.codebook_usage_markdown(usage, codec.codebook_size) + "\n"
    )  # fmt: skip
    return {f"codec/{r.system}/{r.setting}/{m}": getattr(r, m) for r in rows
            for m in ("kbps", "pesq", "stoi")}  # fmt: skip


def evaluate_written_samples(pairs, samples: epath.Path, config, tts_eval, codec=None) -> dict:
    """Evaluate the samples stage's wavs (no second synthesis) beside the ground truth."""
    import numpy as np

    from naturalspeech2_jax.evaluation.corpus import load_audio

    def synthesize(text: str, prompt_wav: np.ndarray):
        pair = next(p for p in pairs if p.target_text == text)
        wav = load_audio(str(samples / f"{pair.pair_id}_generated.wav"))
        durations_file = samples / f"{pair.pair_id}_durations.npy"
        durations = None
        if durations_file.exists():
            with durations_file.open("rb") as f:
                durations = np.load(f)
        return wav, durations

    return tts_eval.evaluate_tts(pairs, synthesize, codec, config, log_every=0)


def stage_export(workdir: epath.Path, opts: Options) -> dict:
    """The trained codec and NS2 as one folder of weights (no optimizer state) that
    ``Synthesizer.from_checkpoint`` and every ``--checkpoint`` CLI load: what one ships."""
    from naturalspeech2_jax.inference.export import export_model

    q = QUICKSTART[opts.preset].get("export", {})
    dtype = q.get("dtype", "float32")
    result = export_model(workdir / "ns2", workdir / "export", dtype=dtype, overwrite=True)
    summary = {"model": result.out_dir, "dtype": dtype, "bytes": result.total_bytes,
               "parameters": result.parameters}  # fmt: skip
    if q.get("check") and dtype != "float32":
        summary.update(_check_export(workdir, opts, result.out_dir, dtype))
    return summary


def _check_export(workdir: epath.Path, opts: Options, model: str, dtype: str) -> dict:
    """The exported model's generated row on the samples stage's pairs, with the same sampler and
    seeds, beside the run's (float32) row of the eval stage: what the export's dtype costs.
    Writes W/eval/export.{json,md}."""
    import math

    from naturalspeech2_jax.evaluation import corpus, report, tts_eval
    from naturalspeech2_jax.inference import Synthesizer
    from naturalspeech2_jax.inference import samples as S

    p = QUICKSTART[opts.preset]
    q, e = p["samples"], p["eval"]
    pairs = corpus.read_pair_list(_done(workdir, "samples")["pairs"])
    out = workdir / "samples_export"
    S.write_pair_samples(Synthesizer.from_checkpoint(model), pairs, out, sampler=q["sampler"],
                         steps=q["steps"], guidance_scale=q.get("guidance_scale", 1.0))  # fmt: skip
    config = _evaluator_config(tts_eval, e)
    ours = evaluate_written_samples(pairs, out, config, tts_eval)["systems"]["generated"]
    run = json.loads((workdir / "eval" / "report.json").read_text())["systems"]["generated"]

    def measured(row: dict, key: str) -> bool:  # an evaluator that did not run gives None/NaN
        return isinstance(row.get(key), int | float) and math.isfinite(row[key])

    keys = [k for k in ("wer", "speaker_similarity", "dnsmos_ovrl")
            if measured(ours, k) and measured(run, k)]  # fmt: skip
    rows = {"float32 (the run)": run, f"{dtype} (the export)": ours}
    table = ["| weights | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    table += [f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |"
              for name, row in rows.items()]  # fmt: skip
    diff = {k: ours[k] - run[k] for k in keys}
    result = {"run": run, "export": ours, "dtype": dtype, "difference": diff}
    report.write_json(result, workdir / "eval" / "export.json")
    (workdir / "eval" / "export.md").write_text(
        f"## {dtype} export against the float32 run\n\nSame {len(pairs)} pairs, sampler and "
        "seeds (samples stage); only the weights differ.\n\n" + "\n".join(table) + "\n"
    )  # fmt: skip
    return {f"export_check/{k}": v for k, v in diff.items()}


STAGES: list[tuple[str, Callable]] = [
    ("corpus", stage_corpus),
    ("data", stage_data),
    ("codec", stage_codec),
    ("codes", stage_codes),
    ("ns2", stage_ns2),
    ("samples", stage_samples),
    ("eval", stage_eval),
    ("export", stage_export),
]


def run_stage(workdir: epath.Path, name: str, opts: Options) -> dict:
    """Run one stage unless its marker says it is done; returns its summary."""
    marker = workdir / f"{name}.done"
    if marker.exists():
        log.info("stage %s: already done", name)
        return json.loads(marker.read_text())
    start = time.time()
    log.info("stage %s: running", name)
    result = dict(STAGES)[name](workdir, opts)
    result["seconds"] = round(time.time() - start, 1)
    marker.write_text(json.dumps(result))
    log.info("stage %s: done in %.0f s", name, result["seconds"])
    return result


def run_pipeline(workdir: str | epath.Path, opts: Options) -> dict[str, dict]:
    """Run (or resume) every stage; returns each stage's summary."""
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    summary = {name: run_stage(workdir, name, opts) for name, _ in STAGES}
    (workdir / "quickstart.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; flags only (see --help).")
    if not _WORKDIR.value:
        raise app.UsageError("--workdir is required, e.g. --workdir=work/quickstart.")
    if _CORPUS.value and not os.path.isdir(_CORPUS.value):
        raise app.UsageError(f"--corpus={_CORPUS.value} is not a directory; give a corpus folder.")
    workdir = epath.Path(_WORKDIR.value).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # Compiled programs persist across runs: a resumed stage does not compile again.
    from naturalspeech2_jax import xla_cache

    xla_cache.enable(str(workdir / "xla_cache"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    shared = _SHARED.value or ("../shared/data" if _PRESET.value == "real" else None)
    if shared and _CORPUS.value:
        raise app.UsageError("pass --corpus or --shared_data, not both.")
    if shared and not os.path.isdir(shared):
        raise app.UsageError(
            f"--shared_data={shared} is not a directory; point it at the folder of "
            "speechocean762_adult, cathy and librispeech_tc100."
        )
    opts = Options(
        preset=_PRESET.value, corpus=_CORPUS.value, layout=_LAYOUT.value,
        durations=_DURATIONS.value, aligner=_ALIGNER.value,
        shared_data=os.path.abspath(shared) if shared else None,
    )  # fmt: skip
    missing = missing_eval_modules(workdir, opts)
    if missing:
        raise app.UsageError(
            f"the eval stage of --preset={opts.preset} needs {', '.join(missing)}, which this "
            'Python cannot import; install the evaluation extras with pip install -e ".[eval]" '
            "and run the same command again."
        )
    from naturalspeech2_jax.train.loop import TrainingInterrupted

    try:
        summary = run_pipeline(workdir, opts)
    except TrainingInterrupted as e:
        # The stage stays unfinished (no marker): the next run resumes its training.
        log.warning("quickstart stopped: %s", e)
        raise SystemExit(e.exit_status) from None
    print(json.dumps(summary, indent=1))
    print(f"synthesize: python launch/synthesize.py --checkpoint {workdir / 'ns2'} "
          f"--text 'Hello there.' --prompt PROMPT.wav --out out.wav")  # fmt: skip


if __name__ == "__main__":
    host_memory.ensure()  # huge pages for XLA's host buffers: re-executes once
    app.run(main)
