"""Helpers shared by the benchmark scripts."""
import numpy as np


def randomise_batchnorm(model, seed=0):
    """Random BatchNorm statistics (so folding is exercised and outputs are not trivial)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n),
                               rng.uniform(0.5, 2.0, n)])
    return model
