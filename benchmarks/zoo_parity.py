"""Parity of the offline zoo's converted EfficientNet-Lite modules with the PyTorch reference.

For each of lite0/1/2: the classification module (``tf.saved_model.load``) and the reference
``efficientnet_lite_pytorch.EfficientNet`` with the same ``.pth`` weights get the same 10 real
images (sklearn's two sample photos plus flips and crops), resized to the native size, as
float32 RGB in [0, 1]; the torch side applies the module's (x*255 - 127)/128 itself.
Prints max |logit diff| (target <= 1e-3) and whether top-1 agrees on every image.

Needs the benchmark-only extras (never runtime dependencies of autotransfer)::

    pip install torch efficientnet-lite-pytorch
    python benchmarks/zoo_parity.py [--zoo-dir DIR]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

TARGET = 1e-3


def images(size: int) -> np.ndarray:
    """10 real photos: each sample image, its mirror, and four crops; [0,1] at ``size``."""
    out = []
    for name in ("flower.jpg", "china.jpg"):
        im = Image.fromarray(load_sample_image(name))
        w, h = im.size
        views = [im, im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                 im.crop((w // 5, h // 5, w - w // 5, h - h // 5)),
                 im.crop((0, 0, w * 2 // 3, h * 2 // 3)),
                 im.crop((w // 3, h // 3, w, h))]
        out += [np.asarray(v.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0
                for v in views]
    return np.stack(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo-dir", default=None, help="zoo directory (built there if needed)")
    args = parser.parse_args()

    import tensorflow as tf
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from autotransfer import zoo
    from autotransfer.zoo.build import _source

    ok = True
    print(f"{'model':<20}{'size':>6}{'images':>8}{'max|diff|':>12}{'top1 same':>11}{'tf ms/img':>11}{'torch ms/img':>14}")
    for entry in zoo.build(dest=args.zoo_dir):
        x = images(entry.input_size)
        module = tf.saved_model.load(str(entry.classification))
        module(tf.constant(x[:1]))  # warm-up
        t = time.perf_counter()
        got = module(tf.constant(x), training=False).numpy()
        tf_ms = (time.perf_counter() - t) * 1e3 / len(x)

        ref = EfficientNet.from_name(entry.name.replace("_", "-"))
        ref.load_state_dict(torch.load(_source(entry.name)[0], map_location="cpu"))
        ref.eval()
        with torch.no_grad():
            xt = (torch.from_numpy(x).permute(0, 3, 1, 2) * 255.0 - 127.0) / 128.0
            t = time.perf_counter()
            want = ref(xt).numpy()
            torch_ms = (time.perf_counter() - t) * 1e3 / len(x)

        diff = float(np.abs(got - want).max())
        same = bool((got.argmax(1) == want.argmax(1)).all())
        ok &= diff <= TARGET and same
        print(f"{entry.name:<20}{entry.input_size:>6}{len(x):>8}{diff:>12.2e}{str(same):>11}"
              f"{tf_ms:>11.1f}{torch_ms:>14.1f}")
        print(f"{'':<20}top-1 ids: {got.argmax(1).tolist()}")
    print("PASS" if ok else f"FAIL (target max|diff| <= {TARGET} and identical top-1)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
