"""`python -m vdiff.methods.pvdm WORKDIR OUT`: the autoencoder export (`cli.main`)."""

from vdiff.methods.pvdm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
