"""Prepare a dataset once, before training: `python -m vdiff.data.prepare {ucf101,folder,digits}`.

    python -m vdiff.data.prepare ucf101 --manual_dir=/data/UCF101 --resolution=64 --split=1
    python -m vdiff.data.prepare folder --manual_dir=~/my_videos --name=my_videos \
        --resolution=128 --labels_from_subfolders
    python -m vdiff.data.prepare digits

Decodes on all cores with a progress bar, is restartable (decoded files are cached
until the dataset is complete), and ends with a report: files used per split and
every skipped file with its reason. Exit code 0 when the dataset is ready, 2 with one
line on a user error (missing or wrongly laid-out source dir; `vdiff.errors.cli`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

from vdiff import errors, progress
from vdiff.data import pipeline
from vdiff.data.builders import tfds_build
from vdiff.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    p = errors.ArgumentParser(prog="python -m vdiff.data.prepare",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", choices=("ucf101", "folder", "digits"))
    p.add_argument("--manual_dir", default="", help="the source: UCF-101 root or your videos")
    p.add_argument("--data_dir", default="", help="where prepared datasets live "
                   "(default $VDIFF_DATA_DIR or ~/.cache/vdiff/datasets)")
    p.add_argument("--resolution", type=int, default=64, help="frame size R (R×R center crop)")
    p.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="UCF-101 split")
    p.add_argument("--name", default="", help="folder: dataset name (default: folder name)")
    p.add_argument("--labels_from_subfolders", action="store_true",
                   help="folder: the first sub-folder level names the class")
    p.add_argument("--min_frames", type=int, default=16, help="skip shorter videos")
    p.add_argument("--max_frames", type=int, default=0, help="keep at most N frames (0 = all)")
    p.add_argument("--frame_format", default="jpeg", choices=("jpeg", "png"))
    p.add_argument("--jpeg_quality", type=int, default=95)
    p.add_argument("--allow_decode_errors", action="store_true",
                   help="keep the decodable part of damaged files instead of skipping them")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoder threads")
    p.add_argument("--digits_config", default="default",
                   choices=("default", "large", "static", "heldout_2k", "tiny"))
    p.add_argument("--overwrite", action="store_true", help="rebuild a prepared dataset")
    p.add_argument("--keep_cache", action="store_true", help="keep the per-file decode cache")
    p.add_argument("--report_json", default="", help="also write the report to this file")
    return p


def _builder(args: argparse.Namespace, data_dir: str):
    if args.dataset == "ucf101":
        from vdiff.data.builders import ucf101

        name = ucf101.config_name(args.resolution, args.split)
        if name not in {c.name for c in ucf101.UCF101.BUILDER_CONFIGS}:
            raise ConfigError(f"--resolution must be 64, 128 or 256 for UCF-101, got "
                             f"{args.resolution}")
        return ucf101.UCF101(config=name, data_dir=data_dir, file_format="array_record")
    if args.dataset == "folder":
        from vdiff.data.builders import video_folder

        name = args.name or os.path.basename(os.path.normpath(args.manual_dir))
        config = video_folder.make_config(name, resolution=args.resolution,
                                          labels_from_subfolders=args.labels_from_subfolders)
        return video_folder.VideoFolder(config=config, data_dir=data_dir,
                                        file_format="array_record")
    from vdiff.data.builders.moving_digits import MovingDigits

    return MovingDigits(config=args.digits_config, data_dir=data_dir,
                        file_format="array_record")


def format_report(report: dict[str, Any], where: str) -> str:
    lines = [f"dataset ready: {where}"]
    used = report.get("files_used", {})
    if used:
        lines.append("files used: " + ", ".join(f"{s} {n}" for s, n in sorted(used.items())))
        lines.append(f"frames per video: {report.get('num_frames_min')}–"
                     f"{report.get('num_frames_max')}")
    if report.get("classes"):
        lines.append(f"classes: {len(report['classes'])}")
    skipped = report.get("skipped", {})
    lines.append(f"files skipped: {len(skipped)}")
    lines += [f"  {key}: {reason}" for key, reason in sorted(skipped.items())]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir or pipeline.default_data_dir()))
    builder = _builder(args, data_dir)
    if builder.is_prepared() and args.overwrite:
        shutil.rmtree(builder.data_dir)
        builder = _builder(args, data_dir)
    if builder.is_prepared():
        report = dict(builder.info.metadata) or {"files_used": {
            s: v.num_examples for s, v in builder.info.splits.items()}}
        print(f"already prepared (use --overwrite to rebuild): {builder.data_dir}")
    elif args.dataset == "digits":
        tfds_build.download_and_prepare(builder, source="scikit-learn's bundled digits")
        report = {"files_used": {s: v.num_examples for s, v in builder.info.splits.items()}}
    else:
        if not args.manual_dir:
            raise ConfigError(f"--manual_dir is required for {args.dataset}")
        from vdiff.data.builders.video_base import PrepareOptions, prepare

        options = PrepareOptions(min_frames=args.min_frames, max_frames=args.max_frames,
                                 frame_format=args.frame_format, jpeg_quality=args.jpeg_quality,
                                 strict=not args.allow_decode_errors)
        report = prepare(builder, os.path.abspath(os.path.expanduser(args.manual_dir)),
                         workers=max(args.workers, 1), options=options,
                         keep_cache=args.keep_cache)
    report["data_dir"] = builder.data_dir
    if args.report_json:
        with open(args.report_json, "w") as f:
            json.dump(report, f, indent=2)
    return report


@errors.cli
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # tfds' info/warning lines drown the report
    progress.log_to_stderr()  # vdiff's own: what is built from where, progress with an ETA
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue (decoded files are cached)",
              file=sys.stderr)
        return 130
    print(format_report(report, report["data_dir"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
