"""Evaluation of zero-shot TTS and of the codec, with models that ship inside pip packages.

Modules (each imports its heavy dependency lazily, so importing this package is cheap):

- ``normalize_text``: transcript normalisation used on both sides of WER.
- ``asr``: Moonshine base-en on onnxruntime (greedy, key/value cache), pocketsphinx, WER, registry.
- ``speaker``: resemblyzer speaker embeddings and cosine similarity.
- ``dnsmos``: DNSMOS P.835 / P.808 from speechmos' ONNX models.
- ``prosody``: phoneme-level (and audio-only) pitch/duration statistics, vs prompt and ground truth.
- ``codec_metrics`` / ``opus``: PESQ-WB, STOI, mel distance, SI-SDR; Opus at measured kbps.
- ``corpus``: test pairs from a list TSV or a Kaldi-style directory.
- ``tts_eval``: the evaluation loop and the ``Synthesize`` / ``CodecResynthesis`` interfaces.
- ``report``: summaries, Markdown, JSON and plots.

Entry point: ``launch/evaluate.py``.
"""
