"""Real photographs that ship inside the scikit-image and scikit-learn wheels.

These are clean (unaltered) real photos for training and for held-out evaluation of the
forensics localiser on machines with no network: the image files are inside the installed
wheels (`skimage/data/*.png|jpg`, `sklearn/datasets/images/*.jpg`), so nothing is fetched at
run time. `load` reads the file straight from the installed package's folder with Pillow; it
never imports scikit-image or scikit-learn and never goes through pooch (most `skimage.data`
functions download on first use; only files checked to be inside the wheels are listed).

What is here (`PHOTOS`, sizes as (height, width), all RGB uint8; the files are byte-identical
in the scikit-image 0.24.0 and 0.26.0 and scikit-learn 1.4.2 and 1.9.1 cp311 manylinux wheels,
hence the lower bounds in requirements.txt):

  name                  package       size          format  licence / provenance
  astronaut             scikit-image  (512, 512)    PNG     public domain (NASA)
  chelsea               scikit-image  (300, 451)    PNG     CC0 (Stefan van der Walt)
  coffee                scikit-image  (400, 600)    PNG     CC0 (Rachel Michetti)
  rocket                scikit-image  (427, 640)    JPEG    public domain (SpaceX)
  motorcycle_left       scikit-image  (500, 741)    PNG     no licence stated (Middlebury 2014)
  hubble_deep_field     scikit-image  (872, 1000)   JPEG    public domain (NASA)
  retina                scikit-image  (1411, 1411)  JPEG    CC0 (Mikael Haggstrom)
  immunohistochemistry  scikit-image  (512, 512)    PNG     no known copyright restrictions
  china                 scikit-learn  (427, 640)    JPEG    CC BY 2.0 (Flickr: danielbuechele)
  flower                scikit-learn  (427, 640)    JPEG    CC BY 2.0 (Flickr: vultilion)

Licences come from the `skimage.data.<function>` docstrings and from
`sklearn/datasets/images/README.txt`. The two scikit-learn photos are CC BY 2.0: a figure or
file that shows them must credit the photographer. `motorcycle_left` is the left view of the
Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), downsampled 4x by
scikit-image; its docstring states no licence, so treat it as research use with that
citation, and drop it from anything redistributed. Every other photo is public domain / CC0.

Scale: these are used at their NATIVE resolution. `load` never resizes (a resize would
resample away the camera's noise and JPEG traces that a forensics model may rely on);
training crops them. They are few, small and of mixed content (portraits, a pet, a tabletop,
outdoor scenes, a lab scene, astronomy, a fundus photograph, microscopy), so they are a
sanity set for "does the detector fire on clean real photos", not a benchmark. About half of
hubble_deep_field and a quarter of retina (the border around the fundus) is near-black, so
random crops there are often flat.

Left out (checked in the same wheels): the greyscale photos (camera, brick, grass, gravel,
moon, coins, cell, page, text, clock_motion) because ten colour ones exist; the synthetic
graphics (colorwheel, phantom, chessboard, logo, horse); `motorcycle_right`, the other view
of the same scene as `motorcycle_left` (a near-duplicate would leak across the split); the
tiny test files (lfw_subset faces, multipage tiffs, the GIF, microaneurysms).

Train / held-out: `split` uses the fixed list `HELD_OUT` (see the comment there), so
"AUC on photos not trained on" means the same photos on every machine and in every run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import os
from collections.abc import Iterable

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Photo:
    """One photo shipped inside a wheel.

    name: the key for `load`. package: the pip distribution to install. module: the top-level
    import name whose folder holds `file` (a path relative to that folder). loader: the
    package's own call that returns the same pixels. licence / source: as stated by the
    package. size: (height, width) at native resolution.
    """

    name: str
    package: str
    module: str
    file: str
    loader: str
    licence: str
    source: str
    size: tuple[int, int]


PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "scikit-image", "skimage", "data/astronaut.png",
          "skimage.data.astronaut()",
          "public domain (no known copyright restrictions)",
          "Eileen Collins, NASA Great Images database (flic.kr/p/r9qvLn)", (512, 512)),
    Photo("chelsea", "scikit-image", "skimage", "data/chelsea.png",
          "skimage.data.chelsea()",
          "CC0", "Chelsea the cat, photographed by Stefan van der Walt", (300, 451)),
    Photo("coffee", "scikit-image", "skimage", "data/coffee.png",
          "skimage.data.coffee()",
          "CC0", "coffee cup, Pikolo Espresso Bar, photographed by Rachel Michetti", (400, 600)),
    Photo("rocket", "scikit-image", "skimage", "data/rocket.jpg",
          "skimage.data.rocket()",
          "public domain", "DSCOVR launch on Falcon 9, SpaceX Photos on Flickr", (427, 640)),
    Photo("motorcycle_left", "scikit-image", "skimage", "data/motorcycle_left.png",
          "skimage.data.stereo_motorcycle()[0]",
          "no licence stated (research benchmark; cite Scharstein et al., GCPR 2014)",
          "Middlebury 2014 stereo benchmark, left view, downsampled 4x by scikit-image",
          (500, 741)),
    Photo("hubble_deep_field", "scikit-image", "skimage", "data/hubble_deep_field.jpg",
          "skimage.data.hubble_deep_field()",
          "public domain (NASA)", "Hubble eXtreme Deep Field, HubbleSite 2012-37", (872, 1000)),
    Photo("retina", "scikit-image", "skimage", "data/retina.jpg",
          "skimage.data.retina()",
          "CC0 1.0", "fundus photograph of a normal left eye, Mikael Haggstrom, "
          "Wikimedia Commons", (1411, 1411)),
    Photo("immunohistochemistry", "scikit-image", "skimage", "data/ihc.png",
          "skimage.data.immunohistochemistry()",
          "no known copyright restrictions",
          "IHC-stained colonic glands, Center for Microscopy And Molecular Imaging (CMMI)",
          (512, 512)),
    Photo("china", "scikit-learn", "sklearn", "datasets/images/china.jpg",
          "sklearn.datasets.load_sample_image('china.jpg')",
          "CC BY 2.0 (attribution required)",
          "Flickr user danielbuechele, photo 6061409035", (427, 640)),
    # The README's attribution line for flower.jpg repeats "danielbuechele", but its links
    # point at the Flickr user vultilion: the links are taken as the source.
    Photo("flower", "scikit-learn", "sklearn", "datasets/images/flower.jpg",
          "sklearn.datasets.load_sample_image('flower.jpg')",
          "CC BY 2.0 (attribution required)",
          "Flickr user vultilion, photo 6056698931", (427, 640)),
)

_BY_NAME = {p.name: p for p in PHOTOS}

# Never trained on; the detection AUC on "photos not trained on" is reported on these.
# Four of ten (about a third), chosen so that each kind of photo sits on both sides of the
# split: an indoor tabletop PNG (coffee; astronaut / chelsea / motorcycle_left train), an
# outdoor JPEG with large flat sky (rocket; china trains), one of the two scikit-learn
# photos (flower, a natural close-up; china trains) and one scientific image
# (immunohistochemistry, microscopy; hubble_deep_field and retina train). Each side has
# PNGs and JPEGs, and photos from both packages. Without scikit-learn three remain held out.
HELD_OUT: tuple[str, ...] = ("coffee", "rocket", "flower", "immunohistochemistry")


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown package photo {name!r}; valid names: "
                      f"{', '.join(p.name for p in PHOTOS)}")


def _path(photo: Photo) -> str | None:
    """The file's path inside the installed package, or None when the package is absent.

    find_spec locates the top-level package without importing it (no scikit-learn import).
    """
    try:
        spec = importlib.util.find_spec(photo.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, *photo.file.split("/"))
        if os.path.isfile(path):
            return path
    return None


def available() -> list[str]:
    """Names of the photos whose package is installed (and ships the file), in PHOTOS order."""
    return [p.name for p in PHOTOS if _path(p) is not None]


def load(name: str) -> np.ndarray:
    """The photo `name` as uint8[H, W, 3] RGB at native resolution (alpha, if any, dropped).

    ValueError (one line) for an unknown name, or when its package is not installed.
    """
    photo = _BY_NAME.get(name)
    if photo is None:
        raise _unknown(name)
    path = _path(photo)
    if path is None:
        raise ValueError(f"package photo {name!r} needs {photo.package}, which is not "
                         f"installed: pip install {photo.package}")
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if array.shape[:2] != photo.size:
        raise ValueError(f"package photo {name!r} at {path} is {array.shape[1]}x"
                         f"{array.shape[0]}, expected {photo.size[1]}x{photo.size[0]}: "
                         f"this {photo.package} version ships a different file")
    return array


def split(names: Iterable[str] | None = None,
          held_out_fraction: float | None = None) -> tuple[list[str], list[str]]:
    """(train_names, held_out_names) for `names` (default: `available()`), both in PHOTOS order.

    held_out_fraction=None (the default, and what reported numbers use): the fixed `HELD_OUT`
    list. A float in (0, 1): for ablations, the ceil(fraction * n) names with the smallest
    sha256(name) are held out (at least one, and at least one left to train on) -- still
    deterministic, independent of input order and of machine. Unknown names are a ValueError.
    """
    names = available() if names is None else list(names)
    for name in names:
        if name not in _BY_NAME:
            raise _unknown(name)
    chosen = set(names)
    ordered = [p.name for p in PHOTOS if p.name in chosen]
    if held_out_fraction is None:
        held = set(HELD_OUT)
    else:
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
        wanted = max(1, math.ceil(held_out_fraction * len(ordered)))
        count = max(0, min(wanted, len(ordered) - 1))
        ranked = sorted(ordered, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
        held = set(ranked[:count])
    return ([n for n in ordered if n not in held], [n for n in ordered if n in held])


def square_at(name: str, size: int, resample: int = Image.BICUBIC) -> np.ndarray:
    """The photo `name` centre-cropped to a square and resized to uint8[size, size, 3]
    (Pillow's `resample` filter, BICUBIC by default)."""
    photo = load(name)
    h, w = photo.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(photo[top:top + side, left:left + side])
    return np.asarray(square.resize((size, size), resample), np.uint8)


def held_out_at(size: int) -> tuple[list[str], np.ndarray]:
    """The held-out photos (`split()[1]`, never trained on) as `square_at(name, size)`:
    (names, uint8[P, size, size, 3]); P = 0 when neither package is installed."""
    _, held_out = split(available())
    out = [square_at(name, size) for name in held_out]
    return held_out, np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)
