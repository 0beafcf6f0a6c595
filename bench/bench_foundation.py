"""Float executor and calibration speed: MobileNet v1 alpha 1.0 at 224x224, 64 images (targets: < 30 s, < 3 GB).

Run: python bench/bench_foundation.py
"""
import pathlib
import resource
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
IMAGES = HERE.parent.parent / "shared" / "reference" / "images"


def mobilenet_graph():
    import keras
    import emc
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(input_shape=(224, 224, 3), alpha=1.0, weights=None)
    return emc.load_model(model)


def calibration_images(n=64):
    """The shared ImageNet and face photos, plus mirrored copies, as 224x224 img_0_1 inputs."""
    from emc.datasets import load_dataset
    parts = [load_dataset(IMAGES / sub, (224, 224, 3), "img_0_1") for sub in ("imagenet", "faces")
             if (IMAGES / sub).is_dir()]
    data = np.concatenate(parts) if parts else np.random.default_rng(0).random((n, 224, 224, 3), np.float32)
    while len(data) < n:
        data = np.concatenate([data, data[:, :, ::-1]])
    return np.ascontiguousarray(data[:n])


def main():
    from emc.calibrate import calibrate
    from emc.passes import optimize
    graph = optimize(mobilenet_graph())
    data = calibration_images()
    graph.run(data[:1])
    start = time.perf_counter()
    graph.run(data[:8], batch_size=8)
    per_image = (time.perf_counter() - start) / 8
    start = time.perf_counter()
    calibration = calibrate(graph, data, method="kld")
    calib_time = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"MobileNet v1 1.0 224x224: {len(graph)} layers, {sum(r['macs'] for r in graph.rows()) / 1e6:.0f} M MACs")
    print(f"float executor: {per_image * 1000:.1f} ms per image (batch of 8)")
    print(f"calibration (kld, {len(data)} images, {len(calibration.ranges)} tensors): {calib_time:.1f} s "
          f"(target < 30 s)")
    print(f"peak memory (max RSS, includes TensorFlow): {peak:.0f} MB (target < 3072 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
