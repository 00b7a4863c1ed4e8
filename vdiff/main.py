"""Entry point: `python -m vdiff.main --config=configs/NAME.py[:ARGS] --workdir=DIR`.

Thin on purpose: flags, optional multi-process init, dispatch. Everything else is
importable from tests and notebooks.
"""

from __future__ import annotations

import logging as py_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from vdiff import errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/vdm_digits.py[:ARGS].",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "protocol"],
                  "train: train (resuming from WORKDIR); sample: sample from WORKDIR's checkpoint; "
                  "eval: run config.evals on WORKDIR's latest checkpoint; protocol: the stated "
                  "FVD16 protocol on it (vdiff/eval/protocol.py: --num_samples, default 2048, "
                  "and the sampler flags).")
flags.DEFINE_bool("multiprocess", False,
                  "Force jax.distributed.initialize() with JAX's own cluster detection. Not "
                  "needed where the environment names the processes (JAX_COORDINATOR_ADDRESS/"
                  "JAX_NUM_PROCESSES/JAX_PROCESS_ID, SLURM under srun, TPU pod VMs); see "
                  "vdiff/distributed.py and launch/.")
flags.mark_flags_as_required(["workdir"])  # --config too for train (checked below)

# --mode=sample options (vdiff/sampling.py SampleOptions). sampler, num_steps,
# guidance_scale and fps default to the config's `sample` settings, any option to its
# `apps.<application>` settings; the defaults shown here apply when the config sets neither.
flags.DEFINE_string("application", "unconditional",
                    "What to sample (default: the method's default application, `unconditional`"
                    " for all but interpolation's `interpolate`): an application of the run's "
                    "method (its `applications`; "
                    "VDM: unconditional | extend | interpolate | super_resolve, vdm_sr: "
                    "super_resolve, PVDM: unconditional | extend, SinFusion: images | edit | "
                    "video | extrapolate | upsample, see vdiff/methods/sinfusion/sampling.py).")
flags.DEFINE_string("sampler", "ancestral", "ancestral | ddim | pc | dpmpp_2m")
flags.DEFINE_integer("num_steps", 128, "Sampler steps.")
flags.DEFINE_integer("num_samples", 4, "Videos to sample.")
flags.DEFINE_integer("num_frames", 0, "Output length (extend: 0 is 4 windows; PVDM, SinFusion "
                     "and interpolation: 0 is the method's default).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("label", -1, "Class label for class-conditional models (-1: cycle).")
flags.DEFINE_float("guidance_scale", 0.0, "Classifier-free guidance weight w.")
flags.DEFINE_enum("conditioning", "reconstruction", ["reconstruction", "replacement"],
                  "How extend/interpolate condition on given frames.")
flags.DEFINE_float("recon_weight", 4.0, "Reconstruction guidance weight w_r.")
flags.DEFINE_integer("sr_factor", 2, "Downsampling factor of the input for super_resolve.")
flags.DEFINE_string("input_video", "", "Video file to extend / interpolate / super-resolve.")
flags.DEFINE_string("output_dir", "", "Where to write samples (default: a new folder "
                    "WORKDIR/samples/<application>_step<N>_<sampler>-<steps>_seed<S>[...]).")
flags.DEFINE_string("input_image", "", "SinFusion edit: the image to noise and denoise.")
flags.DEFINE_float("noise_level", 0.5, "SinFusion edit: noise level t0 in (0, 1].")
flags.DEFINE_integer("height", 0, "SinFusion images: output height (0: training size).")
flags.DEFINE_integer("width", 0, "SinFusion images: output width (0: training size).")
flags.DEFINE_integer("start_frame", 0,
                     "SinFusion video/extrapolate: real frame to start from (video: -1 samples "
                     "the first frame with the Projector).")
flags.DEFINE_enum("direction", "forward", ["forward", "backward"], "SinFusion extrapolate.")
flags.DEFINE_integer("upsample_factor", 2, "SinFusion upsample: 2 or 4.")
SAMPLE_FLAGS = ("application", "sampler", "num_steps", "num_samples", "num_frames", "seed",
                "label", "guidance_scale", "conditioning", "recon_weight", "sr_factor",
                "input_video", "output_dir", "input_image", "noise_level", "height", "width",
                "start_frame", "direction", "upsample_factor")
PROTOCOL_FLAGS = ("num_samples", "sampler", "num_steps", "guidance_scale", "seed")


class _QuietLibraries(py_logging.Filter):
    """Drops INFO chatter that orbax and grain log through absl; keeps their warnings."""

    NOISY = ("/orbax/", "/grain/", "/tensorflow_datasets/", "/jax/_src/xla_bridge")

    def filter(self, record: py_logging.LogRecord) -> bool:
        return record.levelno >= py_logging.WARNING or not any(
            n in record.pathname for n in self.NOISY)


@errors.cli
def main(argv: list[str]) -> int:
    """Runs --mode; a user error (errors.UserError) ends as one line and exit code 2."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().setFormatter(
        py_logging.Formatter("%(asctime)s %(levelname).1s %(message)s", "%H:%M:%S"))
    py_logging.getLogger("absl").setLevel(py_logging.INFO)
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from vdiff import runtime
    from vdiff.train import trainer
    runtime.setup_compilation_cache()
    from vdiff import distributed
    from vdiff.core import workdir as workdir_lib
    distributed.initialize(force=FLAGS.multiprocess)  # before anything touches a device
    # sample / eval without --config: the run's own config.json
    config = FLAGS.config if FLAGS.config is not None else workdir_lib.config_of_run(
        FLAGS.workdir)
    if FLAGS.mode == "train":
        from vdiff.methods import training_runs
        for config, workdir in training_runs(config, FLAGS.workdir):
            trainer.train_and_evaluate(config, workdir)
    elif FLAGS.mode == "eval":
        from vdiff.eval import run_eval
        run_eval.evaluate_workdir(config, FLAGS.workdir)
    elif FLAGS.mode == "protocol":
        from vdiff.eval import protocol
        given = {name: FLAGS[name].value for name in PROTOCOL_FLAGS if FLAGS[name].present}
        protocol.run_protocol(config, FLAGS.workdir, given)
    else:
        from vdiff import sampling
        # flags given on the command line win over the config's sample / apps settings
        given = {name: FLAGS[name].value for name in SAMPLE_FLAGS if FLAGS[name].present}
        sampling.run_sampling(config, FLAGS.workdir,
                              sampling.SampleOptions.resolve(config, given))
    return 0


def config_dirs() -> list[str]:
    """Where the shipped configs are: vdiff/configs/ in an installed wheel (pyproject maps
    configs/ there), the checkout's configs/ for a checkout or an editable install."""
    package = os.path.dirname(os.path.abspath(__file__))
    return [os.path.join(package, "configs"), os.path.join(os.path.dirname(package), "configs")]


def resolve_config_arg(value: str, cwd: str | None = None) -> str:
    """`configs/NAME.py[:ARGS]` that does not exist relative to `cwd` → the shipped file's
    path (with the same `:ARGS`), so `--config=configs/NAME.py` works from any folder once
    vdiff is installed. Any other value, or a name that is not shipped, is returned as is."""
    path, colon, arg = value.partition(":")  # ml_collections splits at the first ':' too
    if os.path.isabs(path) or os.path.exists(os.path.join(cwd or os.getcwd(), path)):
        return value
    folder, name = os.path.split(os.path.normpath(path))
    if folder != "configs":
        return value
    for directory in config_dirs():
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name) + colon + arg
    return value


def _with_shipped_config(argv: list[str]) -> list[str]:
    """argv with its `--config=VALUE` (or `--config VALUE`) passed through resolve_config_arg."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            argv[i] = "--config=" + resolve_config_arg(a[len("--config="):])
        elif a == "--config" and i + 1 < len(argv):
            argv[i + 1] = resolve_config_arg(argv[i + 1])
    return argv


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, but a bad config key or value ends in one clear message."""
    try:
        argv = FLAGS(_with_shipped_config(argv))
        if FLAGS.config is not None:
            FLAGS.config.keys()  # ml_collections defers a failed config load to its first use
            return argv
        if FLAGS.mode != "train":  # sample / eval: the run's own config.json
            return argv
        message = "--config is required for --mode=train"
    except flags.Error as e:
        message = str(e)
        if "Traceback (most recent call last)" in message:  # ml_collections embeds one
            lines = [x for x in message.splitlines() if x.strip()]
            message = f"{lines[0]} {lines[-1]}"
    except (OSError, SyntaxError) as e:  # the config file is missing or does not parse
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        message = f"--config: {lines[-1]}"
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # ml_collections raises these for unknown keys (with a "did you mean") and bad types.
        message = str(e.args[0] if e.args else e).strip("'\"").replace("\\n", " ")
        message = message.replace("\\'", "'")
    print(f"vdiff: bad flags or config: {message} (usage: python -m vdiff.main "
          f"--config=configs/NAME.py[:ARGS] --workdir=DIR [--config.KEY=VALUE ...])",
          file=sys.stderr)
    sys.exit(2)


def run() -> None:
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)


if __name__ == "__main__":
    run()
