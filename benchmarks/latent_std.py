"""The std of s z on held-out images (issue 12: 1 +- 0.05), s the scale factor a latent run
recorded on its training latents:

    python benchmarks/latent_std.py RUN_DIR [--out FILE.json]

z: one posterior sample per test image (KL, as the training latents), or z_e (VQ).
"""
import argparse
import json
import sys

from minidiff.data.images import load_images
from minidiff.torch import latent
from minidiff.torch.train import model_from_checkpoint


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a latent model's checkpoint folder")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    _, cfg = model_from_checkpoint(args.run)
    ae, ae_cfg, _ = latent.load_first_stage(cfg.autoencoder, cfg.autoencoder_sha256)
    images, _ = load_images(cfg.dataset, "test")
    encoded = latent.encode_images(ae, images)
    s_test = latent.latent_scale_factor(ae_cfg.autoencoder, encoded, seed=1)     # 1 / std on the test set
    result = {"run": args.run, "scale_factor": cfg.scale_factor, "n_test": len(images),
              "std_of_s_z_on_test": cfg.scale_factor / s_test}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
