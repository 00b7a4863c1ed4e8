"""Moving digits, the TF-free tfds builder and the grain pipeline."""

import json
import sys

import numpy as np
import pytest

from tests.helpers import load_config
from vdiff.data import moving_digits, pipeline
from vdiff.errors import ConfigError


@pytest.fixture(scope="module")
def data_config(tmp_path_factory):
    config = load_config("vdm_digits", "runlocal")
    config.data.data_dir = str(tmp_path_factory.mktemp("data"))
    pipeline.get_data_source(config.data, split="train")  # builds `tiny` once
    return config.data


def test_generator_is_deterministic_and_varied():
    a, la = moving_digits.make_video(3, seed=0, num_frames=8)
    b, lb = moving_digits.make_video(3, seed=0, num_frames=8)
    c, _ = moving_digits.make_video(4, seed=0, num_frames=8)
    d, _ = moving_digits.make_video(3, seed=1, num_frames=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    assert a.shape == (8, 64, 64, 1) and a.dtype == np.uint8
    assert 0 <= la[0] <= 9 and la[1] in range(-1, 10)
    # Digits move: consecutive frames differ, and the frame is not empty.
    assert a.max() > 100 and not np.array_equal(a[0], a[1])


def test_static_digits_are_the_moving_videos_first_frame_at_rest():
    """The `static` builder config: same digits and start positions, no motion."""
    from vdiff.data.builders.moving_digits import MovingDigits

    static = {c.name: c for c in MovingDigits.BUILDER_CONFIGS}["static"]
    for i in range(4):
        moving, labels = moving_digits.make_video(i, seed=0, num_frames=6)
        still, still_labels = moving_digits.make_video(
            i, seed=0, num_frames=6, min_speed=static.min_speed, max_speed=static.max_speed)
        np.testing.assert_array_equal(still_labels, labels)
        np.testing.assert_array_equal(still, np.repeat(still[:1], 6, axis=0))
        np.testing.assert_array_equal(still[0], moving[0])


def test_one_or_two_digits():
    counts = {int((moving_digits.make_video(i, seed=0, num_frames=2)[1] >= 0).sum())
              for i in range(30)}
    assert counts == {1, 2}


def test_train_and_test_digit_images_are_disjoint():
    train = set(moving_digits.split_indices("train").tolist())
    test = set(moving_digits.split_indices("test").tolist())
    assert not train & test
    assert len(train) + len(test) == moving_digits.num_digit_images() == 1797


def test_large_config_extends_the_default_training_videos_and_keeps_its_test_videos(tmp_path):
    from vdiff.data.builders.moving_digits import MovingDigits

    large = MovingDigits(config="large", data_dir=str(tmp_path))
    default = MovingDigits(config="default", data_dir=str(tmp_path))
    c = large.builder_config
    assert (c.num_train, c.num_test) == (15000, 200)
    ours, theirs = large._split_generators(None), default._split_generators(None)
    for split in ("train", "test"):
        for (i, a), (j, b) in zip(ours[split], theirs[split]):
            assert i == j
            np.testing.assert_array_equal(a["video"], b["video"])
            if i == 2:
                break
    assert load_config("pvdm_ldm_digits", "digits=large").data.builder_config == "large"


def test_a_split_over_tfds_in_memory_shuffle_limit_builds_without_tensorflow(tmp_path,
                                                                             monkeypatch):
    """Above the limit TFDS spills to disk through tf.io.gfile (TensorFlow, not installed):
    a 20,000-video moving-digits build failed that way. Here the limit is shrunk below the
    tiny split's size; the build keeps the split in memory and restores the limit."""
    from tensorflow_datasets.core import shuffle

    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 10_000)  # the split is ~2 MB
    config = load_config("vdm_digits", "runlocal")
    config.data.data_dir = str(tmp_path)
    source = pipeline.get_data_source(config.data, split="train")
    assert len(source) == 64
    video, _ = moving_digits.make_video(5, seed=0, num_frames=8, split="train")
    np.testing.assert_array_equal(source[5]["video"], video)
    assert shuffle.MAX_MEM_BUFFER_SIZE == 10_000
    assert "tensorflow" not in sys.modules


def test_builder_round_trip(data_config):
    source = pipeline.get_data_source(data_config, split="train")
    assert len(source) == 64
    for index in (0, 17, 63):
        example = source[index]
        video, labels = moving_digits.make_video(index, seed=0, num_frames=8, split="train")
        np.testing.assert_array_equal(example["video"], video)
        np.testing.assert_array_equal(example["labels"], labels)
        assert example["label"] == labels[0]
    assert len(pipeline.get_data_source(data_config, split="test")) == 16
    assert "tensorflow" not in sys.modules, "the data path must not import TensorFlow"


def test_batches(data_config):
    it = pipeline.make_iterator(data_config, split="train", seed=0, global_batch_size=8)
    batch = next(it)
    t, r, k = data_config.num_frames, data_config.resolution, data_config.num_images_per_video
    assert batch["video"].shape == (8, t, r, r, 1) and batch["video"].dtype == np.uint8
    assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
    assert batch["images"].shape == (8, k, r, r, 1)
    assert batch["image_labels"].shape == (8, k)
    assert set(batch) == {"video", "label", "images", "image_labels"}


def test_resolution_is_block_average(data_config):
    source = pipeline.get_data_source(data_config, split="train")
    it = pipeline.make_iterator(data_config, split="train", seed=0, global_batch_size=64,
                                shuffle=False)
    batch = next(it)
    full = source[0]["video"][: data_config.num_frames].astype(np.float32)
    f = 64 // data_config.resolution
    expected = full.reshape(full.shape[0], 64 // f, f, 64 // f, f, 1).mean(axis=(2, 4))
    np.testing.assert_allclose(batch["video"][0], np.rint(expected), atol=0.5)


def test_epoch_covers_every_example_once(data_config):
    it = pipeline.make_iterator(data_config, split="train", seed=5, global_batch_size=8)
    seen = [v.tobytes() for _ in range(8) for v in next(it)["video"]]  # 64 = one epoch
    assert len(set(seen)) == 64


def test_process_shards_are_disjoint_and_cover(data_config):
    def epoch(p, n):
        it = pipeline.make_iterator(data_config, split="train", seed=0, global_batch_size=8 * n,
                                    process_index=p, process_count=n, shuffle=False)
        return [v.tobytes() for _ in range(64 // (8 * n)) for v in next(it)["video"]]

    shards = [set(epoch(p, 2)) for p in range(2)]
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(epoch(0, 1))


def test_iterator_state_round_trip(data_config):
    kwargs = dict(split="train", seed=3, global_batch_size=8)
    it = pipeline.make_iterator(data_config, **kwargs)
    for _ in range(11):  # past an epoch boundary (8 batches)
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
    resumed = pipeline.make_iterator(data_config, **kwargs)
    resumed.set_state(state)
    for a in expected:
        b = next(resumed)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_epochs_are_reshuffled(data_config):
    it = pipeline.make_iterator(data_config, split="train", seed=0, global_batch_size=64)
    assert not np.array_equal(next(it)["label"], next(it)["label"])


def test_missing_dataset_without_build(tmp_path):
    config = load_config("vdm_digits", "runlocal")
    config.data.data_dir = str(tmp_path)
    config.data.build_if_missing = False
    with pytest.raises(pipeline.DatasetNotFoundError, match="build_if_missing=true"):
        pipeline.make_iterator(config.data, split="train", seed=0, global_batch_size=8)


def test_ucf_not_prepared_message(tmp_path):
    config = load_config("vdm_ucf", "runlocal")
    config.data.data_dir = str(tmp_path)
    with pytest.raises(pipeline.DatasetNotFoundError, match="UCF-101"):
        pipeline.make_iterator(config.data, split="train", seed=0, global_batch_size=8)


@pytest.mark.parametrize("key,value,match", [
    ("num_frames", 99, "has 8 frames"), ("resolution", 24, "does not divide"),
    ("channels", 3, "channels"), ("name", "mnist", "unknown data.name")])
def test_bad_data_config(data_config, key, value, match):
    bad = data_config.copy_and_resolve_references()
    bad[key] = value
    with pytest.raises(ConfigError, match=match):
        pipeline.make_iterator(bad, split="train", seed=0, global_batch_size=8)


def test_two_jobs_building_the_same_dataset_at_once_both_succeed(tmp_path):
    """Two independent runs started together on an unprepared data dir: one builds under
    the lock, the other waits and reads the finished dataset (before the lock, the second
    rename of the finished dataset raised FileExistsError)."""
    import subprocess

    from tests.helpers import REPO

    script = ("import sys; from tests.helpers import load_config; from vdiff.data import "
              "pipeline; c = load_config('vdm_digits', 'runlocal'); "
              "c.data.data_dir = sys.argv[1]; "
              "print(len(pipeline.get_data_source(c.data, split='train')))")
    jobs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [job.communicate(timeout=300) for job in jobs]
    for job, (out, err) in zip(jobs, results):
        assert job.returncode == 0, err[-2000:]
        assert int(out.split()[-1]) > 0
