"""One module per trainable thing, found by name from ``config.task`` (``train.task.make_task``).

Each module defines ``Task``: the model-specific half of training (build the model, its losses and
parameter groups, its data iterator, its periodic evaluation). ``ns2``: NaturalSpeech 2 on a codes
dataset; ``codec``: the RVQ codec (GAN); ``aligner``: the built-in forced aligner; ``loop_test``: a
small regressor that exercises the generic loop. The models themselves live in ``models/`` and
``align/``; the loop in ``train/``.
"""
