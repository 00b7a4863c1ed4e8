"""Experiment configs, one per file with `get_config(arg)`: `--config=configs/NAME.py[:ARG]`.

Shipped inside the package as `vdiff.configs` (pyproject.toml maps this folder there), so the
same flag works where vdiff is pip-installed and no checkout is around (vdiff/main.py).
"""
