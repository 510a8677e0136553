"""Identity-level evaluation: the two-stage (identity, then face) bootstrap, identity top-1
retrieval, the split-half KID_face reference, and ``--n-boot`` 0 / negative."""

from __future__ import annotations

import csv
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from upsampler import cli
from upsampler.metrics import faces, paired
from upsampler.metrics.evaluate import PAIRED_COLUMNS, evaluate_study, read_split_groups
from upsampler.metrics.kid import mmd2_unbiased

N_IDS, PER_ID = 40, 13  # faces_2600's test split: 40 identities x 13 photos
GROUPS = [f"id{i // PER_ID:02d}" for i in range(N_IDS * PER_ID)]


def width(values: np.ndarray, idx: np.ndarray) -> float:
    _, low, high = paired.mean_with_interval(values, idx)
    return high - low


# ---- grouped bootstrap ---------------------------------------------------------------------------

def test_grouped_rows_hold_whole_drawn_identities():
    idx = paired.grouped_bootstrap_indices(GROUPS, 300, seed=5)
    assert idx.shape == (300, N_IDS * PER_ID) and idx.min() >= 0 and idx.max() < N_IDS * PER_ID
    ids = np.asarray(GROUPS)[idx]
    for row in ids[:50]:
        _, counts = np.unique(row, return_counts=True)
        assert (counts % PER_ID == 0).all()  # each drawn identity brings its 13 faces, never a part
        assert counts.sum() // PER_ID == N_IDS  # 40 identity draws per row
    # identities are drawn with replacement: rows miss some and repeat others
    assert np.mean([len(set(r)) for r in ids]) == pytest.approx(N_IDS * (1 - (1 - 1 / N_IDS) ** N_IDS), rel=0.05)
    # faces within an identity are drawn with replacement too (with within=False, each face exactly once)
    labels, counts = np.unique(ids[0], return_counts=True)
    for g in labels[counts == PER_ID]:
        assert len(set(idx[0][ids[0] == g])) < PER_ID
    once = paired.grouped_bootstrap_indices(GROUPS, 20, seed=5, within=False)
    for row, labels in zip(once, np.asarray(GROUPS)[once]):
        for g in set(labels):
            faces_of_g = row[labels == g]
            assert set(faces_of_g) == {i for i, x in enumerate(GROUPS) if x == g}
    np.testing.assert_array_equal(idx, paired.grouped_bootstrap_indices(GROUPS, 300, seed=5))
    assert not np.array_equal(idx, paired.grouped_bootstrap_indices(GROUPS, 300, seed=6))


def test_grouped_rows_keep_n_with_unequal_identities():
    groups = ["a"] * 5 + ["b"] + ["c"] * 3 + ["d"] * 7
    idx = paired.grouped_bootstrap_indices(groups, 200, seed=1)
    assert idx.shape == (200, len(groups))
    size = {g: groups.count(g) for g in groups}
    cut = 0
    for row in np.asarray(groups)[idx]:
        # in draw order each identity brings all its faces; only the row's last one may be cut short
        runs = [(g, len(list(r))) for g, r in itertools.groupby(row)]
        assert all(k % size[g] == 0 for g, k in runs[:-1])
        cut += runs[-1][1] % size[runs[-1][0]] != 0
    assert 0 < cut < len(idx)
    assert paired.grouped_bootstrap_indices(groups, 0).shape == (0, len(groups))
    with pytest.raises(ValueError, match="at least 2 groups"):
        paired.grouped_bootstrap_indices(["a"] * 4, 10)


def correlated_values(rng, n_sets: int, identity_sd: float = 1.0, face_sd: float = 0.1) -> np.ndarray:
    """(n_sets, 520): a shared per-identity effect plus small per-face noise; true mean 0."""
    effect = rng.normal(0, identity_sd, (n_sets, N_IDS)).repeat(PER_ID, axis=1)
    return effect + rng.normal(0, face_sd, (n_sets, N_IDS * PER_ID))


def test_grouped_interval_is_wider_and_covers_when_faces_of_one_identity_agree():
    rng = np.random.default_rng(0)
    grouped = paired.grouped_bootstrap_indices(GROUPS, 200, seed=1)
    images = paired.bootstrap_indices(len(GROUPS), 200, seed=1)
    values = correlated_values(rng, 100)
    ratio = np.median([width(v, grouped) / width(v, images) for v in values[:10]])
    assert ratio > 2.5  # ~sqrt(13): 40 independent units, not 520
    covered = {name: np.mean([(lambda m: m[1] <= 0 <= m[2])(paired.mean_with_interval(v, idx)) for v in values])
               for name, idx in (("grouped", grouped), ("images", images))}
    assert covered["grouped"] >= 0.85, covered
    assert covered["images"] <= 0.6, covered  # the image bootstrap claims far more certainty than there is


def test_grouped_interval_for_independent_faces():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(10, N_IDS * PER_ID))
    images = paired.bootstrap_indices(len(GROUPS), 400, seed=2)
    one_stage = paired.grouped_bootstrap_indices(GROUPS, 400, seed=2, within=False)
    two_stage = paired.grouped_bootstrap_indices(GROUPS, 400, seed=2)
    ratio_one = np.median([width(v, one_stage) / width(v, images) for v in values])
    ratio_two = np.median([width(v, two_stage) / width(v, images) for v in values])
    assert 0.85 < ratio_one < 1.15
    # resampling faces again inside resampled identities counts their spread twice: expected
    # variance ratio (G-1)/G + (m-1)/m, i.e. a ~1.38x wider (conservative) interval, no more
    expected = np.sqrt((N_IDS - 1) / N_IDS + (PER_ID - 1) / PER_ID)
    assert ratio_two == pytest.approx(expected, rel=0.12)


def test_negative_resamples_are_a_one_line_error():
    for make in (lambda: paired.bootstrap_indices(10, -5), lambda: paired.grouped_bootstrap_indices(GROUPS, -5)):
        with pytest.raises(ValueError, match="must be >= 0, got -5"):
            make()
    assert paired.bootstrap_indices(10, 0).shape == (0, 10)


def test_paired_rows_record_the_resampling_unit():
    rng = np.random.default_rng(3)
    per_image = {"psnr": {"A": rng.normal(size=len(GROUPS)), "B": rng.normal(size=len(GROUPS))}}
    idx = paired.grouped_bootstrap_indices(GROUPS, 50)
    rows, _ = paired.paired_rows(per_image, [], [("B", "A")], idx, resampling_unit="identity", n_units=N_IDS,
                                 n_seeds=3)
    frame = pd.DataFrame(rows, columns=paired.PAIRED_COLUMNS)
    assert list(frame.columns[:8]) == ["metric", "method_a", "method_b", "difference", "ci_low", "ci_high", "n",
                                       "better"]
    assert frame.iloc[0][["resampling_unit", "n_units", "n_seeds", "n"]].tolist() == ["identity", 40, 3, 520]
    rows, _ = paired.paired_rows(per_image, [], [("B", "A")], paired.bootstrap_indices(len(GROUPS), 0))
    assert rows[0]["better"] == "no interval" and np.isnan(rows[0]["ci_low"])
    assert (rows[0]["resampling_unit"], rows[0]["n_units"], rows[0]["n_seeds"]) == ("image", 520, 1)


def test_image_level_intervals_sit_beside_the_identity_level_ones_and_their_widening_is_summed_up():
    rng = np.random.default_rng(4)
    shared = np.repeat(rng.normal(0, 1, N_IDS), PER_ID)  # faces of one identity move together
    per_image = {"psnr": {"A": shared + rng.normal(0, 1, len(GROUPS)), "B": rng.normal(0, 1, len(GROUPS))}}
    grouped, images = paired.grouped_bootstrap_indices(GROUPS, 400, 1), paired.bootstrap_indices(len(GROUPS), 400, 1)
    rows, _ = paired.paired_rows(per_image, [], [("A", "B")], grouped, resampling_unit="identity", n_units=N_IDS,
                                 image_indices=images)
    frame = pd.DataFrame(rows, columns=paired.PAIRED_COLUMNS)
    row = frame.iloc[0]
    d = per_image["psnr"]["A"] - per_image["psnr"]["B"]
    assert (row["image_ci_low"], row["image_ci_high"]) == pytest.approx(paired.mean_with_interval(d, images)[1:])
    ratio = (row["ci_high"] - row["ci_low"]) / (row["image_ci_high"] - row["image_ci_low"])
    assert ratio > 1.5  # the identity-level interval sees the shared part; the image-level one does not
    assert paired.grouping_widening(frame) == pytest.approx((ratio, ratio, ratio))
    rows, _ = paired.paired_rows(per_image, [], [("A", "B")], images)
    assert np.isnan(rows[0]["image_ci_low"]) and paired.grouping_widening(pd.DataFrame(rows)) is None


@pytest.mark.parametrize("pair", [("Model B, MSE #1", "Model A, MSE #1"), ("Model B, MSE #2", "Model A, MSE #2"),
                                  ("Model B, SRGAN", "Model A, SRGAN #1")])
def test_on_faces_2600_resampling_identities_widens_the_identity_distance_interval(pair):
    """The GPU study's committed per-image identity distances on the 520 test faces (13 per
    identity): the identity-level interval of B - A is 1.2-2.5x as wide as the image-level one."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    table = pd.read_csv(docs / "study-gpu" / "evaluation_per_image_metrics.csv")
    with (docs / "study-gpu" / "test_split.csv").open(newline="") as handle:
        group_of = {f"{r['name']}.png": r["group"] for r in csv.DictReader(handle)}
    images = sorted(group_of)
    a, b = (table[table["method"] == m].set_index("image").loc[images, "identity_distance"].to_numpy() for m in pair)
    grouped = paired.grouped_bootstrap_indices([group_of[i] for i in images], 1000, 0)
    ratio = width(a - b, grouped) / width(a - b, paired.bootstrap_indices(len(images), 1000, 0))
    assert 1.2 <= ratio <= 2.5, ratio


# ---- identity top-1 -------------------------------------------------------------------------------

def clustered(rng, n_ids=N_IDS, per_id=PER_ID, spread=0.05, dim=128):
    centres = rng.normal(0, 1, (n_ids, dim))
    ids = np.arange(n_ids).repeat(per_id).astype(str)
    return centres.repeat(per_id, axis=0) + rng.normal(0, spread, (n_ids * per_id, dim)), ids


def test_identity_top1_on_clusters_and_shuffled_embeddings():
    rng = np.random.default_rng(4)
    gallery, ids = clustered(rng)
    probes = gallery + rng.normal(0, 0.05, gallery.shape)  # a method that keeps identity
    top1 = faces.identity_top1(probes, gallery, ids)
    assert top1.shape == (len(ids),) and set(np.unique(top1)) <= {0.0, 1.0}
    assert top1.mean() == 1.0
    chance = (PER_ID - 1) / (len(ids) - 1)
    shuffled = faces.identity_top1(probes[rng.permutation(len(ids))], gallery, ids)
    assert abs(shuffled.mean() - chance) < 0.04
    assert "identity_top1" not in paired.LOWER_IS_BETTER
    assert paired.better_of("identity_top1", "A", "B", 0.01, 0.2) == "A"
    # on the HR images themselves it is leave-one-out retrieval
    small, small_ids = clustered(rng, n_ids=10, per_id=5, spread=2.0, dim=8)
    assert faces.identity_top1(small, small, small_ids).mean() == faces.retrieval_accuracy(small, small_ids)


def test_identity_top1_leaves_the_probes_own_hr_photo_out():
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(N_IDS * PER_ID, 128))  # no identity structure at all
    ids = np.asarray(GROUPS)
    probes = gallery + rng.normal(0, 1e-3, gallery.shape)  # each probe sits on its own HR photo
    with_own = ids[np.argmin(cdist(probes, gallery), axis=1)] == ids
    assert with_own.mean() == 1.0  # what a gallery holding the probe's own photo would report
    assert faces.identity_top1(probes, gallery, ids).mean() < 0.1
    with pytest.raises(ValueError, match="two photos"):
        faces.identity_top1(probes[:3], gallery[:3], ["a", "a", "b"])


# ---- KID_face split-half reference ----------------------------------------------------------------

def test_split_half_kid_splits_by_identity_and_is_a_mean_shift():
    rng = np.random.default_rng(6)
    emb, ids = clustered(rng, spread=0.3)
    emb = emb * 0.13  # dlib-like scale: norms ~1.5 in 128-d
    half = faces.identity_halves(ids, seed=0)
    assert not set(ids[half]) & set(ids[~half]) and half.sum() == len(ids) // 2
    np.testing.assert_array_equal(half, faces.identity_halves(ids, seed=0))
    assert not np.array_equal(half, faces.identity_halves(ids, seed=1))
    kid = faces.split_half_kid(emb, ids, seed=0)
    assert kid == pytest.approx(mmd2_unbiased(emb[half], emb[~half]))
    assert kid > 0 and faces.mean_shift_term(emb[half], emb[~half]) == pytest.approx(kid, rel=0.1)
    shifted = emb + 0.02
    assert faces.mean_shift_term(emb, shifted) == pytest.approx(mmd2_unbiased(emb, shifted), rel=0.1)


# ---- evaluate_study with identities, and --n-boot ---------------------------------------------------

class FakeEmbedder:
    """Stands in for dlib: 4x4 block means of each image (48-d), so photos of one identity agree."""

    def embed(self, images, progress=False):
        x = np.asarray(images, np.float64) / 255.0
        n, h, w, c = x.shape
        return x.reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(n, -1)


def make_grouped_split(root, n_ids=4, per_id=3, hr=32, scale=4, manifest=True):
    """A processed set with ``test/hr``, ``test/lr`` and a manifest recording each image's group."""
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    test = root / "test"
    (test / "hr").mkdir(parents=True)
    (test / "lr").mkdir()
    rows = []
    for g in range(n_ids):
        base = gaussian_filter(rng.normal(size=(hr, hr, 3)), sigma=(3, 3, 0)) * 500 + 128
        for k in range(per_id):
            x = base + gaussian_filter(rng.normal(size=(hr, hr, 3)), sigma=(2, 2, 0)) * 60
            img = Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8))
            name = f"{g:02d}{k:02d}"
            img.save(test / "hr" / f"{name}.png")
            img.resize((hr // scale, hr // scale), Image.BICUBIC).save(test / "lr" / f"{name}.png")
            rows.append({"name": name, "split": "test", "group": f"person{g}"})
    if manifest:
        with (root / "manifest.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["name", "split", "group"])
            writer.writeheader()
            writer.writerows([{"name": "x", "split": "train", "group": "other"}, *rows])
    return test


@pytest.fixture
def fake_faces(monkeypatch):
    monkeypatch.setattr(faces, "FaceEmbedder", FakeEmbedder)


@pytest.fixture
def bilinear(monkeypatch):
    from upsampler.metrics import evaluate

    def run(model, lr, batch_size=16):
        from PIL import Image

        return np.stack([np.asarray(Image.fromarray(im).resize((im.shape[1] * 4, im.shape[0] * 4), Image.BILINEAR))
                         for im in lr])

    monkeypatch.setattr(evaluate, "run_generator", run)
    return object()  # the "model" run_generator receives


def test_evaluate_resamples_identities_and_reports_identity_top1(tmp_path, fake_faces, bilinear):
    test = make_grouped_split(tmp_path / "set")
    names = sorted(p.name for p in (test / "hr").iterdir())
    assert read_split_groups(test, names) == [f"person{i // 3}" for i in range(12)]
    r = evaluate_study(test, {"Model A": bilinear}, tmp_path / "out", perceptual=False, no_reference=False,
                       n_boot=100, grid_images=0)
    frame = pd.read_csv(r.paired_csv)
    assert list(frame.columns) == PAIRED_COLUMNS
    assert set(frame["resampling_unit"]) == {"identity"} and set(frame["n_units"]) == {4}
    assert set(frame["n_seeds"]) == {1} and set(frame["n"]) == {12}
    assert {"identity_top1", "identity_distance", "kid_face"} <= set(frame["metric"])
    t = r.table.set_index("method")
    assert t.loc["Bicubic", "identity_top1"] == 1.0 and (t["resampling_unit"] == "identity").all()
    assert set(r.per_image["identity_top1"].unique()) <= {0.0, 1.0}
    # the intervals are those of the identity-level bootstrap, seeded as the image bootstrap was
    psnr = r.per_image.pivot(index="image", columns="method", values="psnr").loc[names]
    grouped = paired.grouped_bootstrap_indices(read_split_groups(test, names), 100, seed=0)
    expected = paired.paired_difference(psnr["Model A"], psnr["Bicubic"], grouped)
    row = r.paired[r.paired["metric"] == "psnr"].iloc[0]
    assert (row["difference"], row["ci_low"], row["ci_high"]) == pytest.approx(expected)
    assert (t.loc["Model A", "psnr_low"], t.loc["Model A", "psnr_high"]) == pytest.approx(
        paired.mean_with_interval(psnr["Model A"], grouped)[1:])
    text = r.markdown.read_text()
    assert text.count(paired.GROUPED_NOTE) >= 3  # the intervals note and both table headings
    assert "identity_top1 reference, the HR images themselves" in text and "1.000 [1.000, 1.000]" in text
    assert "chance (a random other photo) is 0.182" in text  # 2 / 11: the other two photos of 4 x 3
    assert "KID_face reference" in text and "mean-embedding shift" in text
    # the same split without its manifest: images are the units, and no identity_top1
    test2 = make_grouped_split(tmp_path / "bare", manifest=False)
    assert read_split_groups(test2, names) is None
    r2 = evaluate_study(test2, {"Model A": bilinear}, tmp_path / "out2", perceptual=False, no_reference=False,
                        n_boot=100, grid_images=0)
    frame2 = pd.read_csv(r2.paired_csv)
    assert set(frame2["resampling_unit"]) == {"image"} and set(frame2["n_units"]) == {12}
    assert "identity_top1" not in r2.table.columns and paired.GROUPED_NOTE not in r2.markdown.read_text()


def test_evaluate_without_resamples_has_no_intervals(tmp_path, fake_faces, bilinear):
    test = make_grouped_split(tmp_path / "set")
    r = evaluate_study(test, {"Model A": bilinear}, tmp_path / "out", perceptual=False, no_reference=False,
                       n_boot=0, grid_images=0)
    t = r.table.set_index("method")
    assert np.isfinite(t["psnr"]).all() and t["psnr_low"].isna().all() and t["kid_face_high"].isna().all()
    assert set(r.paired["better"]) == {"no interval"}
    assert "Intervals: none" in r.markdown.read_text()
    with pytest.raises(ValueError, match="must be >= 0"):
        evaluate_study(test, {}, tmp_path / "out", faces=False, perceptual=False, no_reference=False, n_boot=-5)


def test_evaluate_cli_n_boot_zero_and_negative(tmp_path, monkeypatch, capsys, fake_faces, bilinear):
    test = make_grouped_split(tmp_path / "set")
    mine = {k: v for k, v in cli.COMMANDS.items() if v[0] == "upsampler.metrics.cli"}
    monkeypatch.setattr(cli, "COMMANDS", mine)
    args = ["evaluate", str(test), "--out", str(tmp_path / "out"), "--no-perceptual", "--no-piqe", "--grid-images", "0"]
    assert cli.main([*args, "--n-boot", "0"]) == 0
    assert "Intervals: none" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli.main([*args, "--n-boot", "-5"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--n-boot: must be an integer >= 0, got -5" in err and "Traceback" not in err and "negative dimensions" not in err
