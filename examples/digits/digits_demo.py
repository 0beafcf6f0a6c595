"""emc end to end, fully offline, in about a minute: train a small Keras CNN on scikit-learn's digits, convert
it for the K210 (kmodel v3 and v4) and for plain C, simulate each device on held-out digits
and print the accuracies next to the float model's, plus the memory reports.

    python examples/digits/digits_demo.py [--out out/digits] [--epochs 30]

Prints one parseable line per model: `accuracy <name>: <fraction>` (float, k210-v3, k210-v4, c).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SIZE = 16          # the 8x8 digits are upsampled to 16x16: the K210's KPU wants maps of at least 4x4 after pooling
SEED = 0


def load_digits_images():
    """scikit-learn's 1797 digits as uint8 16x16 grayscale images (what a camera would give) and labels."""
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(img).resize((SIZE, SIZE), Image.BILINEAR)) for img in small])
    return images[..., None], digits.target.astype(np.int64)


def build_model():
    import keras
    from keras import layers
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 1)),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10),
    ], name="digits")


def train(x, y, epochs):
    import keras
    keras.utils.set_random_seed(SEED)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model


def write_calibration_images(images, folder, count=200):
    """A folder of PNG files is what emc.convert / `emc convert --dataset` take for calibration."""
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(images[:count]):
        Image.fromarray(img[..., 0]).save(os.path.join(folder, f"digit_{i:04d}.png"))
    return folder


def device_runs(model, calib, out):
    """(name, artefact or None, note) for each device; a device this build cannot make gets a note instead."""
    import emc
    runs = []
    for version in (3, 4):
        name = f"k210-v{version}"
        artefact = emc.convert(model, platform="k210", dataset=calib, dataset_func="img_0_1", version=version,
                               name=f"digits_v{version}")
        artefact.save(os.path.join(out, f"digits_v{version}.kmodel"))
        runs.append((name, artefact, None))
    c_platform = emc.platforms.get("c")
    if not hasattr(c_platform, "convert"):
        runs.append(("c", None, "skipped: the C platform is not available in this build"))
    else:
        artefact = emc.convert(model, platform="c", dataset=calib, dataset_func="img_0_1", name="digits")
        artefact.save(os.path.join(out, "c"))
        runs.append(("c", artefact, None))
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("out", "digits"), help="output folder (default out/digits)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    args = parser.parse_args(argv)
    start = time.time()

    import emc
    from emc.evaluate import format_evaluation
    from sklearn.model_selection import train_test_split
    images, labels = load_digits_images()
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.25, random_state=SEED,
                                                        stratify=labels)
    f_train, f_test = x_train.astype(np.float32) / 255.0, x_test.astype(np.float32) / 255.0   # img_0_1
    os.makedirs(args.out, exist_ok=True)
    model = train(f_train, y_train, args.epochs)
    model.save(os.path.join(args.out, "digits.keras"))
    calib = write_calibration_images(x_train, os.path.join(args.out, "calib"))
    print(f"trained on {len(x_train)} digits in {time.time() - start:.1f} s; testing on {len(x_test)} held-out digits")

    results = [("float", emc.evaluate(model, f_test, y_test), None)]
    for name, artefact, note in device_runs(model, calib, args.out):
        if artefact is None:
            print(f"note: {name} {note}")
            continue
        print(f"\n{artefact.report}\n")
        results.append((name, emc.evaluate(artefact, f_test, y_test), artefact))

    kmodel = dict((name, artefact) for name, _, artefact in results).get("k210-v3")
    if kmodel is not None:
        emc.export_c_array(kmodel, os.path.join(args.out, "digits_v3_kmodel.h"), name="digits_kmodel")
    dec_bits = emc.export_test_bin(f_test, y_test, os.path.join(args.out, "digits_test.bin"))
    print(f"wrote {args.out}: {', '.join(sorted(os.listdir(args.out)))} (digits_test.bin: NNoM test bin, input "
          f"dec_bits {dec_bits})")
    name, result, _ = results[min(1, len(results) - 1)]
    print(f"\n{name} on the held-out digits:\n{format_evaluation(result)}\n")
    for name, result, _ in results:
        print(f"accuracy {name}: {result['top1']:.4f}")
    print(f"total time: {time.time() - start:.1f} s")
    print(f"try: emc compare {args.out}/digits.keras {args.out}/digits_v3.kmodel --dataset {args.out}/calib")
    return 0


if __name__ == "__main__":
    sys.exit(main())
