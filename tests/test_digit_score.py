"""The digit-recognisability score: its classifier reads held-out digits, and corrupted or
empty frames score below real ones."""

import json

import numpy as np

from vdiff.eval import digit_score as ds


def test_classifier_reads_held_out_digits_and_corruption_lowers_the_score(tmp_path, capsys):
    clf = ds.classifier(32)
    frames, labels = ds._frames(32, split="test", resolution=32, max_digits=1, seed=5)
    accuracy = np.mean(clf.predict(ds.centred_crops(frames, ds._window(32))) == labels)
    assert accuracy > 0.85  # digit images never seen in training
    real = ds.score(np.rint(frames).astype(np.uint8), clf)
    rng = np.random.default_rng(0)
    speckled = np.where(rng.random(frames.shape) < 0.5, 0, frames)  # strokes broken up
    broken = ds.score(np.rint(speckled).astype(np.uint8), clf)
    noise = ds.score(rng.integers(0, 256, frames.shape).astype(np.uint8), clf)
    assert real["confidence"] > broken["confidence"] + 0.05
    assert real["score"] > 5 and real["score"] > 2 * noise["score"]
    assert ds.score(np.zeros((4, 32, 32), np.uint8), clf)["confidence"] < 0.5
    # the CLI on an .npz of [N, T, r, r, 1] videos
    path = tmp_path / "v.npz"
    np.savez(path, videos=np.rint(frames[:32]).astype(np.uint8).reshape(2, 16, 32, 32, 1))
    assert ds.main([str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"generated", "real_reference"}
    assert 0.1 <= out["generated"]["confidence"] <= 1.0
