"""What loading a run for inference costs: the whole train state through a ``Trainer`` (what
inference once did) against ``train.restore.restore_params`` (weights only).

    python -m naturalspeech2_jax.benchmarks.restore --workdir RUN --mode params    # or trainer

prints one JSON line: the mode, the bytes restored, the seconds and the process's peak RSS. Run
each mode in its own process (peak RSS is per process). Any run the loop wrote works; the model
is built from the run's ``config.json`` through its task (``config.task``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

import jax
import ml_collections
from etils import epath
from flax import nnx

from naturalspeech2_jax.train import loop
from naturalspeech2_jax.train.restore import restore_params
from naturalspeech2_jax.train.task import make_task

MODES = ("trainer", "params")


def _one_device(config: Any) -> Any:
    """The run's config for one device (inference), whatever its training topology was."""
    config.num_devices, config.batch_size, config.grad_accum = 1, 1, 1
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
    config.init_from = ""
    return config


def measure_restore(workdir: str, mode: str) -> dict[str, Any]:
    """Restore the latest checkpoint of ``workdir`` the ``mode`` way; bytes, seconds, peak RSS."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; use one of {MODES}.")
    path = epath.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: pass the --workdir of a training run.")
    config = _one_device(ml_collections.ConfigDict(json.loads(path.read_text())))
    start = time.perf_counter()
    if mode == "trainer":
        trainer = loop.Trainer(config, workdir)
        state = trainer.restore_or_init(None)
        trainer.checkpointer.close()
        restored = state
    else:
        task = make_task(config)
        # The model's variables as the task builds them: the codec task's model is the GAN, so the
        # whole trained tree is restored (inference itself takes only the codec subtree).
        abstract = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
        model, _ = restore_params(workdir, abstract)
        restored = nnx.state(model)
    jax.block_until_ready(jax.tree.leaves(restored))
    return {
        "mode": mode,
        "task": str(config.task),
        "restored_bytes": int(sum(x.nbytes for x in jax.tree.leaves(restored))),
        "seconds": round(time.perf_counter() - start, 3),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a training run's --workdir")
    parser.add_argument("--mode", choices=MODES, default="params")
    args = parser.parse_args(argv)
    print(json.dumps(measure_restore(args.workdir, args.mode)))


if __name__ == "__main__":
    main()
