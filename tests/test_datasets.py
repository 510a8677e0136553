"""Fetching the study's datasets (upsampler.data.datasets) offline: official-looking files served by a
local HTTP server, checked by their MD5 and image count, cut to the study's size."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from upsampler.data import datasets

PEOPLE = {person: 4 + person % 3 for person in range(1, 13)}  # 12 people with 4-6 photos each


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A CelebA-like zip and identity file, a COCO-like zip, served on 127.0.0.1; the Remotes that
    point at them (with their real MD5s and image counts)."""
    root = tmp_path_factory.mktemp("official")
    lines, number = [], 0
    with zipfile.ZipFile(root / "img_align_celeba.zip", "w") as archive:
        for person, count in PEOPLE.items():
            for _ in range(count):
                number += 1
                archive.writestr(f"img_align_celeba/{number:06d}.jpg", _jpeg(number))
                lines.append(f"{number:06d}.jpg {person}\n")
    (root / "identity_CelebA.txt").write_text("".join(lines))
    with zipfile.ZipFile(root / "val2017.zip", "w") as archive:
        for k in range(7):
            archive.writestr(f"val2017/{k * 37:012d}.jpg", _jpeg(100 + k))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    md5 = {name: hashlib.md5((root / name).read_bytes()).hexdigest()
           for name in ("img_align_celeba.zip", "identity_CelebA.txt")}
    remotes = {
        "images": replace(datasets.CELEBA_IMAGES, url=f"{url}/img_align_celeba.zip", md5=md5["img_align_celeba.zip"],
                          images=number),
        "identity": replace(datasets.CELEBA_IDENTITY, url=f"{url}/identity_CelebA.txt",
                            md5=md5["identity_CelebA.txt"]),
        "coco": replace(datasets.COCO_VAL2017, url=f"{url}/val2017.zip", images=7),
        "url": url,
        "root": root,
    }
    yield remotes
    server.shutdown()


def test_the_official_files_are_named_with_their_published_checksums():
    assert datasets.CELEBA_IMAGES.gdrive_id == "0B7EVK8r0v71pZjFTYXZWM3FlRnM"
    assert datasets.CELEBA_IMAGES.md5 == "00d2c5bc6d35e252742224ab0c1e8fcb" and datasets.CELEBA_IMAGES.images == 202_599
    assert datasets.CELEBA_IDENTITY.md5 == "32bd1bd63d3c78cd57e08160ec5ed1e2"
    assert datasets.COCO_VAL2017.md5 is None and datasets.COCO_VAL2017.images == 5000


def test_celeba_subset_downloads_verifies_and_keeps_whole_identities(official, tmp_path):
    out = datasets.celeba_subset(tmp_path / "faces", tmp_path / "downloads", identities=5, per_identity=4, seed=3,
                                 images=official["images"], identity_file=official["identity"], progress=False)
    names = sorted(p.name for p in out.glob("*.jpg"))
    assert len(names) == 20
    ids = datasets.read_identities(out / "identity_CelebA.txt")
    assert sorted(ids) == names and sorted(np.unique(list(ids.values()), return_counts=True)[1]) == [4] * 5
    truth = datasets.read_identities(official["root"] / "identity_CelebA.txt")
    assert all(truth[name] == person for name, person in ids.items())  # each face keeps its real identity
    for name in names[:3]:  # the very bytes of the official zip
        with zipfile.ZipFile(official["root"] / "img_align_celeba.zip") as archive:
            assert (out / name).read_bytes() == archive.read(f"img_align_celeba/{name}")
    manifest = json.loads((out / "SOURCE.json").read_text())
    assert manifest["verified"][0]["md5"] == official["images"].md5 and manifest["verified"][0]["images"] == sum(PEOPLE.values())
    # preprocessing finds the identity file by itself and splits by identity
    from upsampler.study.notebook import find_groups_csv

    assert find_groups_csv(out) == (out / "identity_CelebA.txt", "celeba_identity")
    # a second call downloads nothing and changes nothing
    stamp = (out / "SOURCE.json").stat().st_mtime_ns
    (tmp_path / "downloads" / "img_align_celeba.zip").unlink()
    again = datasets.celeba_subset(tmp_path / "faces", tmp_path / "downloads", identities=5, per_identity=4, seed=3,
                                   images=official["images"], identity_file=official["identity"], progress=False)
    assert again == out and (out / "SOURCE.json").stat().st_mtime_ns == stamp


def test_choose_faces_is_seeded_and_only_takes_people_with_enough_photos():
    identities = {f"{k:06d}.jpg": person for k, person in
                  enumerate([p for p, n in PEOPLE.items() for _ in range(n)], 1)}
    a = datasets.choose_faces(identities, 4, 6, seed=1)
    assert a == datasets.choose_faces(identities, 4, 6, seed=1) and len(a) == 24
    assert {identities[name] for name in a} == {p for p, n in PEOPLE.items() if n >= 6}  # exactly the 4 with 6
    assert datasets.choose_faces(identities, 4, 4, seed=1) != datasets.choose_faces(identities, 4, 4, seed=2)
    with pytest.raises(ValueError, match="only 4 identities have >= 6 photos; asked for 5"):
        datasets.choose_faces(identities, 5, 6)


def test_a_user_given_folder_is_used_and_verified(official, tmp_path):
    local = official["root"]
    out = datasets.coco_subset(tmp_path / "coco", tmp_path / "downloads", local=local, count=5,
                               archive=official["coco"], progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{k * 37:012d}.jpg" for k in range(5)] + ["SOURCE.json"])
    assert not (tmp_path / "downloads").exists()  # nothing downloaded
    assert "sha256" in json.loads((out / "SOURCE.json").read_text())["verified"][0]  # no published MD5: recorded
    with pytest.raises(ValueError, match=r"val2017.zip: 7 JPEG images, expected 5000"):
        datasets.coco_subset(tmp_path / "c2", tmp_path / "d2", local=local, count=5, progress=False)
    with pytest.raises(FileNotFoundError, match=r"no val2017.zip there; download val2017.zip in a browser"):
        datasets.coco_subset(tmp_path / "c3", tmp_path / "d3", local=tmp_path, progress=False)


def test_a_wrong_file_is_named_with_its_problem(official, tmp_path):
    bad = tmp_path / "mine"
    bad.mkdir()
    (bad / "identity_CelebA.txt").write_text("000001.jpg 1\n")
    with pytest.raises(ValueError, match=r"identity_CelebA.txt: MD5 \w+ is not the published"):
        datasets.fetch(official["identity"], tmp_path / "dl", local=bad)
    (bad / "val2017.zip").write_text("<html>quota exceeded</html>")
    with pytest.raises(ValueError, match=r"val2017.zip: not a zip file \(an HTML page"):
        datasets.fetch(official["coco"], tmp_path / "dl", local=bad)


def test_a_refused_download_says_what_to_do(official, tmp_path):
    missing = replace(official["coco"], url=official["url"] + "/gone.zip")
    with pytest.raises(datasets.DownloadRefused, match=r"val2017.zip: the download from .* failed .*download "
                                                        r"val2017.zip in a browser from https://cocodataset.org"):
        datasets.fetch(missing, tmp_path / "dl", progress=False)
    assert list((tmp_path / "dl").iterdir()) == []  # no partial file left behind
    wrong = replace(official["identity"], md5="0" * 32)  # pooch checks the published hash while downloading
    with pytest.raises(datasets.DownloadRefused, match="identity_CelebA.txt"):
        datasets.fetch(wrong, tmp_path / "dl2", progress=False)
    assert not (tmp_path / "dl2" / "identity_CelebA.txt").exists()


def test_google_drive_files_go_through_gdown(monkeypatch, tmp_path):
    import gdown

    calls = []

    def fake_download(id, output, quiet):  # noqa: A002 - gdown's own keyword
        calls.append(id)
        Path(output).write_text("000001.jpg 1\n")
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    identity = replace(datasets.CELEBA_IDENTITY, md5=hashlib.md5(b"000001.jpg 1\n").hexdigest())
    path, facts = datasets.fetch(identity, tmp_path, progress=False)
    assert calls == ["1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS"] and path.read_text() == "000001.jpg 1\n"
    monkeypatch.setattr(gdown, "download", lambda **kw: (_ for _ in ()).throw(
        RuntimeError("Too many users have viewed or downloaded this file recently")))
    with pytest.raises(datasets.DownloadRefused, match=r"img_align_celeba.zip: .*Too many users.*"
                                                        r"mmlab.ie.cuhk.edu.hk/projects/CelebA.html"):
        datasets.fetch(datasets.CELEBA_IMAGES, tmp_path / "x", progress=False)
