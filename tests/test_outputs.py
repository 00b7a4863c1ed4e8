"""Sample folders say what made them and never overwrite each other."""

import json
import os

import numpy as np

from vdiff import outputs
from vdiff.sampling import SampleOptions, output_dir


def test_runs_with_different_samplers_keep_both_and_a_rerun_gets_a_counter(tmp_path):
    wd = str(tmp_path)
    ddim = output_dir(wd, SampleOptions(sampler="ddim", num_steps=64), 1000)
    dpm = output_dir(wd, SampleOptions(sampler="dpmpp_2m", num_steps=25, seed=3), 1000)
    assert os.path.basename(ddim) == "unconditional_step1000_ddim-64_seed0"
    assert os.path.basename(dpm) == "unconditional_step1000_dpmpp_2m-25_seed3"
    for d in (ddim, dpm):
        outputs.write_videos(np.zeros((1, 2, 4, 4, 1)), d, fps=4, info={"dir": d})
    again = output_dir(wd, SampleOptions(sampler="ddim", num_steps=64), 1000)
    assert again == ddim + "-1"
    assert output_dir(wd, SampleOptions(sampler="ddim", num_steps=64), 1000) == ddim + "-2"
    for d in (ddim, dpm):  # the first two runs' outputs are intact
        assert json.load(open(os.path.join(d, "info.json"))) == {"dir": d}
        with np.load(os.path.join(d, "samples.npz")) as f:
            assert f["videos"].shape == (1, 2, 4, 4, 1)
    explicit = str(tmp_path / "mine")
    assert output_dir(wd, SampleOptions(output_dir=explicit), 5) == explicit


def test_class_conditional_names_say_which_classes():
    name = outputs.sample_dir_name
    assert name("unconditional", step=7, seed=0, sampler="ddim", num_steps=8,
                num_classes=10) == "classcond_step7_ddim-8_seed0_classes"
    assert name("unconditional", step=7, seed=1, sampler="pc", num_steps=8, num_classes=10,
                label=3, guidance_scale=2.0) == "classcond_step7_pc-8_w2_seed1_label3"
    assert name("extend", step=7, seed=0, sampler="ddim", num_steps=8, num_classes=10,
                label=0) == "extend_step7_ddim-8_seed0_label0"
    assert name("video", step=400, seed=2) == "video_step400_seed2"  # SinFusion


def test_writer_outputs(tmp_path):
    paths = outputs.write_videos(np.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8, 1),
                                 str(tmp_path), fps=4, formats=("mp4",))
    assert [os.path.basename(p) for p in paths] == ["sample_00.mp4", "sample_01.mp4",
                                                    "grid.png"]
    assert os.path.isfile(tmp_path / "samples.npz") and not os.path.exists(
        tmp_path / "info.json")


def test_a_claimed_folder_is_never_handed_out_twice(tmp_path):
    """Two processes sampling at once: the second gets `-1` even before the first wrote."""
    first = outputs.unique_output_dir(str(tmp_path / "a"))
    assert os.path.isdir(first) and not os.listdir(first)
    assert outputs.unique_output_dir(str(tmp_path / "a")) == str(tmp_path / "a-1")
