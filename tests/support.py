"""Helpers the tests and the benchmarks share: smooth probe images, BatchNorm statistics drawn from what a layer
sees on them (so deep random networks keep an input-dependent output), and a measure of that dependence."""
import numpy as np


def smooth_images(shape, n, rng):
    """n images in [0, 1]: a random 4x4 grid of levels blown up to the image size, plus pixel noise."""
    h, w, c = shape
    coarse = rng.uniform(0, 1, (n, 4, 4, c))
    image = coarse[:, np.arange(h) * 4 // h][:, :, np.arange(w) * 4 // w]
    return np.clip(image + rng.normal(0, 0.1, (n,) + shape), 0, 1).astype(np.float32)


def probe_statistics(x):
    """(mean, variance + 1e-3) per channel (last axis) of a BatchNorm's input x on probe images."""
    axes = tuple(range(np.ndim(x) - 1))
    return x.mean(axis=axes), x.var(axis=axes) + 1e-3


def perturbed_statistics(seen, rng):
    """Moving mean and variance near the seen (mean, variance): mean moved by 0.3 standard deviations, variance
    scaled by 0.5..2, as float32 (in that order of random draws)."""
    mean, var = seen
    n = np.shape(mean)[0]
    moved = (mean + rng.normal(0, 0.3, n) * np.sqrt(var)).astype(np.float32)
    return moved, (var * rng.uniform(0.5, 2.0, n)).astype(np.float32)


def all_keras_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from all_keras_layers(layer)
        else:
            yield layer


def randomise_keras_batchnorm(model, rng, probe=None):
    """Random gamma / beta and moving statistics for every Keras BatchNormalization (nested models included):
    from the layer's input on the probe images when given, else around mean 0 / variance 1. rng: a Generator
    or a seed."""
    import keras
    rng = np.random.default_rng(rng)
    for layer in all_keras_layers(model):
        if type(layer).__name__ != "BatchNormalization":
            continue
        weights = layer.get_weights()
        n = weights[0].shape[0]
        seen = (np.zeros(n), np.ones(n))
        if probe is not None:
            seen = probe_statistics(np.asarray(keras.Model(model.inputs, layer.input)([probe])))
        new, stats = [], None
        for kind in ["gamma", "beta", "mean", "var"][-len(weights):]:
            if kind == "gamma":
                new.append(rng.uniform(0.5, 1.5, n).astype(np.float32))
            elif kind == "beta":
                new.append(rng.normal(0, 0.3, n).astype(np.float32))
            else:
                stats = stats or perturbed_statistics(seen, rng)
                new.append(stats[0] if kind == "mean" else stats[1])
        layer.set_weights(new)
    return model


def input_dependence(outputs):
    """How much a batch of outputs varies over the samples: mean standard deviation over mean magnitude."""
    flat = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    return float(flat.std(axis=0).mean() / (np.abs(flat).mean() + 1e-12))
