"""Finding a task by name: ``config.task`` is a module of ``naturalspeech2_jax.tasks``."""

from __future__ import annotations

import pytest

from naturalspeech2_jax.tasks import aligner, codec, loop_test, ns2
from naturalspeech2_jax.train.task import make_task
from tests.helpers import load_config


@pytest.mark.parametrize(
    ("config_name", "module"),
    [("loop_test", loop_test), ("codec", codec), ("aligner", aligner), ("diffusion", ns2)],
)
def test_each_config_names_a_task_module_whose_task_it_builds(config_name, module):
    config = load_config(config_name)
    task = make_task(config)
    assert type(task) is module.Task and task.config is config


def test_unknown_task_lists_the_modules():
    config = load_config("loop_test", task="nosuch")
    with pytest.raises(ValueError, match="config.task='nosuch' is not a module of") as error:
        make_task(config)
    for name in ("aligner", "codec", "loop_test", "ns2"):
        assert repr(name) in str(error.value)
    # A module of the package without a Task (a helper module) is no task either.
    with pytest.raises(ValueError, match="defines no `Task`"):
        make_task(load_config("loop_test", task="random_codec"))
