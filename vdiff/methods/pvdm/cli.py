"""`python -m vdiff.methods.pvdm WORKDIR OUT`: export a trained PVDM autoencoder (EMA weights
+ config) into a folder that pvdm.autoencoder_workdir accepts."""

from __future__ import annotations

import os

from vdiff import errors
from vdiff.methods.pvdm.weights import export_autoencoder


@errors.cli
def main(argv: list[str] | None = None) -> int:
    parser = errors.ArgumentParser(
        prog="python -m vdiff.methods.pvdm",
        description="Export a trained PVDM autoencoder (EMA weights + config) into a folder "
                    "that pvdm.autoencoder_workdir / the latent configs' ae= accept.")
    parser.add_argument("workdir", help="the pvdm_ae training workdir")
    parser.add_argument("out_dir", help="the folder to write (created)")
    args = parser.parse_args(argv)
    path = export_autoencoder(args.workdir, args.out_dir)
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) and config.json")
    return 0
