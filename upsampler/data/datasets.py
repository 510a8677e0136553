"""The study's datasets from their official sources: fetched, verified, and cut to the study's size.

* **CelebA** (Model B's data and the test faces): the aligned-and-cropped faces
  ``img_align_celeba.zip`` (202,599 JPEGs) and ``identity_CelebA.txt`` from the authors' Google
  Drive (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html), with the MD5 sums that torchvision's
  CelebA loader also checks. :func:`celeba_subset` extracts ``identities`` x ``per_identity``
  faces (200 x 13 = 2,600 by default: the layout of the study's offline ``faces_2600``, 13 photos
  per person so that a test face has other photos of its person), chosen with a seed among the
  people who have that many, plus their lines of ``identity_CelebA.txt`` (which preprocessing
  finds by itself and uses to split by identity).
* **COCO** (Model A's data): ``val2017.zip`` (5,000 photos) from cocodataset.org; COCO publishes no
  checksums, so it is verified by its image count and the SHA-256 is recorded.
  :func:`coco_subset` extracts the first ``count`` photos in file-name order (2,000, as the
  original study used).

Google Drive often refuses the large CelebA file ("too many users have viewed or downloaded this
file"); then the error says what to do: download the files in a browser into a folder (on Colab,
a folder of your Drive) and pass that folder as ``local``. Every fetch writes ``SOURCE.json``
beside what it extracted, and a second call with the same request reuses it.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from upsampler.utils.files import file_digest

CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
COCO_PAGE = "https://cocodataset.org/#download"


@dataclass(frozen=True)
class Remote:
    """One official file: where it is and what it must be."""

    name: str
    url: str
    md5: str | None = None  # None: not published (then the count check and the recorded SHA-256 stand)
    images: int | None = None  # JPEGs a zip must hold
    page: str = ""  # where a person downloads it by hand

    @property
    def gdrive_id(self) -> str | None:
        return self.url.split("id=", 1)[1] if "drive.google.com" in self.url and "id=" in self.url else None


CELEBA_IMAGES = Remote("img_align_celeba.zip", "https://drive.google.com/uc?id=0B7EVK8r0v71pZjFTYXZWM3FlRnM",
                       md5="00d2c5bc6d35e252742224ab0c1e8fcb", images=202_599, page=CELEBA_PAGE)
CELEBA_IDENTITY = Remote("identity_CelebA.txt", "https://drive.google.com/uc?id=1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS",
                         md5="32bd1bd63d3c78cd57e08160ec5ed1e2", page=CELEBA_PAGE)
COCO_VAL2017 = Remote("val2017.zip", "http://images.cocodataset.org/zips/val2017.zip", images=5_000, page=COCO_PAGE)


class DownloadRefused(ValueError):
    """The source did not hand the file over; the message says how to get it by hand."""


def _by_hand(remote: Remote, folder: Path) -> str:
    return (f"download {remote.name} in a browser from {remote.page or remote.url} into a folder (on Colab: a folder "
            f"of your Google Drive) and pass that folder as the local source; it is looked for there first "
            f"(now: {folder})")


def verify(remote: Remote, path: Path) -> dict:
    """Check ``path`` is ``remote``'s file (MD5 where published, image count for zips); returns what
    was checked. ValueError naming the file and the problem otherwise."""
    facts: dict = {"file": remote.name, "bytes": path.stat().st_size}
    if remote.md5 is not None:
        md5 = file_digest(path, "md5")
        if md5 != remote.md5:
            raise ValueError(f"{path}: MD5 {md5} is not the published {remote.md5}: an incomplete or different "
                             "file; delete it and fetch it again")
        facts["md5"] = md5
    else:
        facts["sha256"] = file_digest(path, "sha256")
    if remote.images is not None:
        try:
            with zipfile.ZipFile(path) as archive:
                count = sum(1 for n in archive.namelist() if n.lower().endswith(".jpg"))
        except zipfile.BadZipFile:
            raise ValueError(f"{path}: not a zip file (an HTML page saved instead of the file?)") from None
        if count != remote.images:
            raise ValueError(f"{path}: {count} JPEG images, expected {remote.images}")
        facts["images"] = count
    return facts


def _download(remote: Remote, target: Path, progress: bool) -> None:
    partial = target.with_name(target.name + ".part")
    try:
        if remote.gdrive_id is not None:
            import gdown

            if gdown.download(id=remote.gdrive_id, output=str(partial), quiet=not progress) is None:
                raise OSError("Google Drive returned no file")
        else:
            import pooch

            # pooch checks the hash itself when one is published, and writes atomically.
            pooch.retrieve(remote.url, known_hash=f"md5:{remote.md5}" if remote.md5 else None,
                           fname=partial.name, path=partial.parent, progressbar=progress)
    except Exception as exc:  # gdown and pooch raise their own types (quota, HTTP errors, hash mismatch)
        partial.unlink(missing_ok=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DownloadRefused(f"{remote.name}: the download from {remote.url} failed ({reason[:200]}); "
                              + _by_hand(remote, target.parent)) from None
    partial.replace(target)


def fetch(remote: Remote, folder: str | Path, *, local: str | Path | None = None,
          progress: bool = True) -> tuple[Path, dict]:
    """``remote``'s file and what :func:`verify` checked: from ``local`` (a folder holding it, or the file itself) when
    given, else from ``folder`` if fetched before, else downloaded into ``folder``."""
    folder = Path(folder)
    if local is not None:
        local = Path(local)
        path = local if local.is_file() else local / remote.name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no {remote.name} there; " + _by_hand(remote, local))
        return path, verify(remote, path)
    path = folder / remote.name
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        print(f"downloading {remote.name} from {remote.url}")
        _download(remote, path, progress)
    return path, verify(remote, path)


def read_identities(path: Path) -> dict[str, int]:
    """``identity_CelebA.txt``: file name -> identity (``000001.jpg 2880`` per line)."""
    out: dict[str, int] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{number}: expected '<file> <identity>', got {line[:80]!r}")
        out[parts[0]] = int(parts[1])
    return out


def choose_faces(identities: dict[str, int], n_identities: int, per_identity: int, seed: int = 0) -> dict[str, int]:
    """``n_identities`` people with at least ``per_identity`` photos, chosen with ``seed``, and
    ``per_identity`` of each one's photos (also seeded): file -> identity, sorted by file."""
    by_person: dict[int, list[str]] = {}
    for name, person in sorted(identities.items()):
        by_person.setdefault(person, []).append(name)
    eligible = sorted(p for p, files in by_person.items() if len(files) >= per_identity)
    if len(eligible) < n_identities:
        raise ValueError(f"only {len(eligible)} identities have >= {per_identity} photos; asked for {n_identities}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=n_identities, replace=False)
    out = {}
    for person in sorted(int(p) for p in chosen):
        files = by_person[person]
        for index in sorted(rng.choice(len(files), size=per_identity, replace=False)):
            out[files[index]] = person
    return dict(sorted(out.items()))


def _extract(archive: Path, members: dict[str, str], out: Path) -> None:
    """Write ``members`` (member name -> output file name) of ``archive`` into ``out``."""
    with zipfile.ZipFile(archive) as handle:
        for member, name in members.items():
            with handle.open(member) as src, open(out / name, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _finished(out: Path, request: dict) -> bool:
    manifest = out / "SOURCE.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("request") == request


def _finish(out: Path, request: dict, checked: list[dict]) -> None:
    (out / "SOURCE.json").write_text(json.dumps({"request": request, "verified": checked}, indent=2) + "\n")


def celeba_subset(out: str | Path, downloads: str | Path, *, local: str | Path | None = None, identities: int = 200,
                  per_identity: int = 13, seed: int = 0, images: Remote = CELEBA_IMAGES,
                  identity_file: Remote = CELEBA_IDENTITY, progress: bool = True) -> Path:
    """A folder of ``identities`` x ``per_identity`` CelebA aligned faces with their
    ``identity_CelebA.txt`` lines, made from the verified official files; returns the folder."""
    out = Path(out)
    request = {"dataset": "celeba", "identities": identities, "per_identity": per_identity, "seed": seed,
               "files": [asdict(images), asdict(identity_file)]}
    if _finished(out, request):
        return out
    archive, archive_facts = fetch(images, downloads, local=local, progress=progress)
    id_path, id_facts = fetch(identity_file, downloads, local=local, progress=progress)
    chosen = choose_faces(read_identities(id_path), identities, per_identity, seed)
    with zipfile.ZipFile(archive) as handle:
        members = {Path(n).name: n for n in handle.namelist() if n.lower().endswith(".jpg")}
    missing = [name for name in chosen if name not in members]
    if missing:
        raise ValueError(f"{archive}: {len(missing)} listed faces are not in the zip (first: {missing[0]})")
    if out.exists():
        shutil.rmtree(out)  # an unfinished or different subset: made again from the verified files
    out.mkdir(parents=True)
    _extract(archive, {members[name]: name for name in chosen}, out)
    (out / "identity_CelebA.txt").write_text("".join(f"{name} {person}\n" for name, person in chosen.items()))
    _finish(out, request, [archive_facts, id_facts])
    print(f"CelebA: {len(chosen)} faces of {identities} identities in {out}")
    return out


def coco_subset(out: str | Path, downloads: str | Path, *, local: str | Path | None = None, count: int = 2000,
                archive: Remote = COCO_VAL2017, progress: bool = True) -> Path:
    """A folder of the first ``count`` COCO photos (file-name order) of the verified official zip."""
    out = Path(out)
    request = {"dataset": "coco", "count": count, "files": [asdict(archive)]}
    if _finished(out, request):
        return out
    path, facts = fetch(archive, downloads, local=local, progress=progress)
    with zipfile.ZipFile(path) as handle:
        names = sorted(n for n in handle.namelist() if n.lower().endswith(".jpg"))
    if count > len(names):
        raise ValueError(f"{path}: {len(names)} photos, fewer than the {count} asked for")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _extract(path, {name: Path(name).name for name in names[:count]}, out)
    _finish(out, request, [facts])
    print(f"COCO: {count} photos in {out}")
    return out


def study_dataset(dataset: str, root: str | Path, *, local: str | Path | None = None, progress: bool = True) -> Path:
    """The folder to preprocess for ``dataset`` ("celeba" or "coco"), made under ``root``
    (``root/downloads`` keeps the official files, so a second call downloads nothing)."""
    root = Path(root)
    if dataset == "celeba":  # the module's Remotes looked up now, so that a test can point them elsewhere
        return celeba_subset(root / "celeba_2600", root / "downloads", local=local, progress=progress,
                             images=CELEBA_IMAGES, identity_file=CELEBA_IDENTITY)
    if dataset == "coco":
        return coco_subset(root / "coco_2000", root / "downloads", local=local, progress=progress, archive=COCO_VAL2017)
    raise ValueError(f"unknown dataset {dataset!r}: 'celeba' or 'coco'")
