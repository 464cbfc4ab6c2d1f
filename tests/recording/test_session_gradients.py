"""The framework-free session asks for a gradient figure only where the optimizer's state means one."""

import numpy as np

import weightwatch
from weightwatch.recording.session import RecordingSession, Variable


def test_gradient_asked_only_for_trainable_unfrozen_tensors(tmp_path):
    session = RecordingSession(tmp_path / "run", check=False, verbose=0)
    session.start_fit()
    session.open(model_name="m", info={"framework": "numpy"}, initial_epoch=0)
    session.annotate({"chance_loss": 1.5})
    asked = []

    def gradient(handle):
        asked.append(handle)
        return 0.5

    a = np.ones(4, np.float32)
    variables = [Variable("w", "m/w", True, False), Variable("frozen", "m/frozen", True, True),
                 Variable("stat", "m/stat", False, False)]
    session.record(variables, lambda h: a.copy(), epoch=0, batch=None, step=0, trigger="begin",
                   logs={}, gradient=gradient)
    session.end()
    assert asked == ["w"]
    run = weightwatch.open_run(tmp_path / "run")
    assert run.history("m/w", "grad_rms")[0] == 0.5
    assert np.isnan(run.history("m/frozen", "grad_rms")[0]) and np.isnan(run.history("m/stat", "grad_rms")[0])
    assert run.manifest["chance_loss"] == 1.5
