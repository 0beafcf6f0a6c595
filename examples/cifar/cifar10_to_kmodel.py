"""Convert a CIFAR-10 model file (TensorLayer or Keras) to K210 kmodels v3 and v4, and check them against float.

    python examples/cifar/cifar10_to_kmodel.py [MODEL] [--dataset IMAGES_DIR] [--out out/cifar]

Defaults: the Maix-EMC example network and images of ../shared/reference when that folder is present.
The models of cifar10_train.py take img_0_1 input (pixel / 255); so does Maix-EMC's. The dataset folder holds
calibration images (any size; they are resized to 32x32). The same call in your own script:

    emc.save_kmodel(model, "cifar10.kmodel", "images/", dataset_func="img_0_1", quant_func="minmax", version=3)
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "reference")
DEFAULT_MODEL = os.path.join(SHARED, "float-models", "maixemc_cifar10.h5")
DEFAULT_IMAGES = os.path.join(SHARED, "images", "cifar10")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="TensorLayer .h5 or Keras .keras/.h5 file")
    parser.add_argument("--dataset", default=DEFAULT_IMAGES, help="folder of calibration images")
    parser.add_argument("--dataset-func", default="img_0_1", help="input mapping the model was trained with")
    parser.add_argument("--quant", default="minmax", help="minmax, kld, l2, percentile ... (default minmax)")
    parser.add_argument("--out", default=os.path.join("out", "cifar"), help="output folder (default out/cifar)")
    args = parser.parse_args(argv)
    for path, what in ((args.model, "model"), (args.dataset, "dataset folder")):
        if not os.path.exists(path):
            print(f"cifar10_to_kmodel: {what} {path} does not exist; give it on the command line "
                  f"(see --help)", file=sys.stderr)
            return 2

    import emc
    from emc.errors import EmcError
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.model))[0]
    for version in (3, 4):
        try:
            artefact = emc.convert(args.model, platform="k210", dataset=args.dataset, dataset_func=args.dataset_func,
                                   quant_func=args.quant, version=version, name=f"{stem}_v{version}")
        except EmcError as err:
            print(f"cifar10_to_kmodel: {err}", file=sys.stderr)
            return 2
        path = os.path.join(args.out, f"{stem}_v{version}.kmodel")
        artefact.save(path)
        print(artefact.report)
        print(f"wrote {path}\n")
        print(emc.compare(None, artefact, args.dataset, dataset_func=args.dataset_func))   # layer by layer
        print()
    print("flash the .kmodel (e.g. to 0x300000 with kflash, or copy it to the SD card) and run "
          "examples/cifar/maixpy_cifar10.py on the board")
    return 0


if __name__ == "__main__":
    sys.exit(main())
