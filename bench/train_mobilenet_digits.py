"""A trained MobileNet for the K210 accuracy bench, made offline: keras.applications.MobileNet(alpha=0.25,
weights=None) at 128x128x3 fine-tuned for a few epochs on scikit-learn's digits, upscaled to 128x128 and drawn as
grey on a random coloured background. Writes out/bench/mobilenet_digits.keras and 60 test images (.npz).

Run once: python bench/train_mobilenet_digits.py [--epochs 15]. Preprocessing: x / 127.5 - 1 ('img_neg1_1').
"""
import argparse
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "out" / "bench"


def digit_images(seed=0):
    """(uint8 N x 128 x 128 x 3 images, labels): digits scaled up by 16 (bilinear), coloured background, noise."""
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(seed)
    images = []
    for img in digits.images:
        big = np.asarray(Image.fromarray((img * 16).astype(np.uint8)).resize((128, 128), Image.BILINEAR), np.float32)
        ink = big[..., None] / 255.0
        background = rng.uniform(0, 160, 3)
        colour = rng.uniform(180, 255, 3)
        pix = background * (1 - ink) + colour * ink + rng.normal(0, 6, (128, 128, 3))
        images.append(np.clip(pix, 0, 255).astype(np.uint8))
    return np.stack(images), digits.target


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    import keras
    keras.utils.set_random_seed(0)
    images, labels = digit_images()
    order = np.random.default_rng(1).permutation(len(labels))
    test, train = order[:60], order[60:]
    x = images.astype(np.float32) / 127.5 - 1.0
    base = keras.applications.MobileNet(alpha=0.25, weights=None, include_top=False, input_shape=(128, 128, 3))
    for layer in base.layers:                  # faster moving statistics: a short training from scratch
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(base.output))
    model = keras.Model(base.input, out, name="mobilenet_025_digits")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x[train], labels[train], epochs=args.epochs, batch_size=32, verbose=2,
              validation_data=(x[test], labels[test]))
    OUT.mkdir(parents=True, exist_ok=True)
    model.save(OUT / "mobilenet_digits.keras")
    np.savez(OUT / "digits_test.npz", images=images[test], labels=labels[test], calib=images[train[:200]])
    acc = float(np.mean(model.predict(x[test], verbose=0).argmax(1) == labels[test]))
    print(f"test accuracy {acc:.3f} on {len(test)} images; saved {OUT / 'mobilenet_digits.keras'}")


if __name__ == "__main__":
    main()
