"""Helpers shared by the benchmark scripts."""
import numpy as np


def randomise_batchnorm(model, seed=0, probe=None):
    """Random BatchNorm parameters, so that folding is exercised and outputs are not trivial.

    With probe images, each BatchNorm's mean and variance are its input's statistics on them (perturbed), in
    layer order: with unrelated statistics the signal of a deep random network dies out layer by layer and
    its output no longer depends on the input, which would make any accuracy figure meaningless.
    """
    import keras
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.get_weights()[0].shape[0]
            mean, var = np.zeros(n), np.ones(n)
            if probe is not None:
                x = np.asarray(keras.Model(model.inputs, layer.input)([probe]), np.float64)
                axes = tuple(range(x.ndim - 1))
                mean, var = x.mean(axis=axes), x.var(axis=axes) + 1e-3
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n),
                               mean + rng.normal(0, 0.3, n) * np.sqrt(var), var * rng.uniform(0.5, 2.0, n)])
    return model


def input_dependence(outputs):
    """How much a batch of outputs varies over the samples: mean standard deviation over mean magnitude."""
    flat = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    return float(flat.std(axis=0).mean() / (np.abs(flat).mean() + 1e-12))
