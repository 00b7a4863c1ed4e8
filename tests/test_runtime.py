"""Backend-aware defaults: 'auto' dtype and attention resolve per backend; explicit wins."""

import jax.numpy as jnp
import ml_collections
import pytest

from vdiff import runtime
from vdiff.errors import ConfigError


@pytest.mark.parametrize("backend, dtype", [("gpu", jnp.bfloat16), ("tpu", jnp.bfloat16),
                                            ("cpu", jnp.float32)])
def test_auto_dtype_per_backend(backend, dtype):
    assert runtime.compute_dtype("auto", backend=backend) == dtype


def test_explicit_dtype_wins_on_every_backend():
    for backend in ("gpu", "tpu", "cpu"):
        assert runtime.compute_dtype("float32", backend=backend) == jnp.float32
        assert runtime.compute_dtype("bfloat16", backend=backend) == jnp.bfloat16


def test_auto_attention_is_cudnn_only_for_long_sequences_on_gpu():
    assert runtime.attention_impl("auto", backend="gpu") == "cudnn"
    assert runtime.attention_impl("auto", long_sequences=False, backend="gpu") is None
    assert runtime.attention_impl("auto", backend="tpu") is None
    assert runtime.attention_impl("auto", backend="cpu") is None
    assert runtime.attention_impl("xla", backend="gpu") is None
    assert runtime.attention_impl("cudnn", backend="cpu") == "cudnn"  # explicit wins
    assert runtime.attention_impl("einsum", long_sequences=False) == "einsum"


def test_unknown_values_are_config_errors():
    with pytest.raises(ConfigError, match="model.dtype"):
        runtime.compute_dtype("float8")
    with pytest.raises(ConfigError, match="attention"):
        runtime.attention_impl("flash")


def test_resolved_settings_for_the_start_up_log():
    m = ml_collections.ConfigDict(dict(dtype="auto", spatial_attention_impl="auto",
                                       temporal_attention_impl="auto", base_channels=8))
    got = runtime.resolved_model_settings(m, backend="gpu")
    assert got == {"model.dtype": "auto → bfloat16",
                   "model.spatial_attention_impl": "auto → cudnn",
                   "model.temporal_attention_impl": "auto → xla"}
    m.dtype = "float32"
    assert runtime.resolved_model_settings(m, backend="cpu")["model.dtype"] == "float32"


def test_shipped_configs_default_to_auto():
    """Every shipped config leaves the accelerator choice to the backend (the GPU setting
    of vdm_digits once trained in float32 at 38 % of the benchmarked speed)."""
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1] / "configs"
    for path, arg in [("vdm_digits.py", "full"), ("vdm_ucf.py", None), ("vdm_digits_sr.py", None),
                      ("pvdm_ae_digits.py", None), ("pvdm_ldm_digits.py", None),
                      ("pvdm_ae_ucf.py", None), ("pvdm_ldm_ucf.py", None),
                      ("sinfusion_video.py", None), ("sinfusion_image.py", None),
                      ("dreampose_dataset.py", None), ("dreampose_subject.py", None)]:
        spec = importlib.util.spec_from_file_location("cfg", root / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.get_config(arg).model
        assert model.dtype == "auto", path
        for key in model.keys():
            if key.endswith("attention_impl"):
                assert model[key] == "auto", (path, key)
