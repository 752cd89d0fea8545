"""Learning-rate schedules."""

import pytest

from naturalspeech2_jax.train.optim import make_schedule


def test_schedules():
    inv = make_schedule(dict(lr=1.0, warmup_steps=10, schedule="inverse_sqrt"), 100)
    assert float(inv(0)) == pytest.approx(0.1)
    assert float(inv(9)) == pytest.approx(1.0)
    assert float(inv(39)) == pytest.approx(0.5)  # sqrt(10/40)
    cos = make_schedule(dict(lr=2.0, warmup_steps=0, schedule="cosine", min_lr_ratio=0.1), 100)
    assert float(cos(0)) == pytest.approx(2.0)
    assert float(cos(50)) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert float(cos(100)) == pytest.approx(0.2)
