"""Tests for anomaly_jax.package_photos: every photo shipped in an installed wheel loads as
uint8 RGB at its recorded size, equals the package's own loader, needs no network; the split
is fixed, deterministic and disjoint; bad names and missing packages are one-line ValueErrors.
Photos of a package that is not installed are skipped (pytest.importorskip)."""
from __future__ import annotations

import importlib
import socket

import numpy as np
import pytest

from anomaly_jax import package_photos as pp

ALL_NAMES = [p.name for p in pp.PHOTOS]


def test_records_are_consistent():
    assert len(set(ALL_NAMES)) == len(ALL_NAMES)
    assert set(pp.HELD_OUT) <= set(ALL_NAMES)
    for photo in pp.PHOTOS:
        assert photo.package in ("scikit-image", "scikit-learn")
        assert min(photo.size) >= 256 and photo.licence and photo.source


@pytest.mark.parametrize("photo", pp.PHOTOS, ids=ALL_NAMES)
def test_load_matches_record_and_package_loader(photo):
    pytest.importorskip(photo.module)
    assert photo.name in pp.available()
    image = pp.load(photo.name)
    assert image.dtype == np.uint8 and image.shape == (*photo.size, 3)
    assert image.std() > 5  # a real picture, not a blank
    # The loader the record names returns the same pixels (it goes through the package).
    namespace = {photo.module: importlib.import_module(photo.module)}
    importlib.import_module({"skimage": "skimage.data", "sklearn": "sklearn.datasets"}[
        photo.module])
    reference = eval(photo.loader, namespace)  # noqa: S307 - our own constant string
    np.testing.assert_array_equal(image, reference)


def test_load_needs_no_network(monkeypatch):
    names = pp.available()
    if not names:
        pytest.skip("neither scikit-image nor scikit-learn is installed")

    def no_network(*args, **kwargs):
        raise AssertionError("package_photos tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for name in names:
        assert pp.load(name).shape[2] == 3


def test_split_is_fixed_deterministic_and_disjoint():
    train, held = pp.split(ALL_NAMES)
    assert held == [n for n in ALL_NAMES if n in pp.HELD_OUT] and len(held) >= 2
    assert train and not set(train) & set(held)
    assert sorted(train + held) == sorted(ALL_NAMES)
    assert pp.split(list(reversed(ALL_NAMES))) == (train, held)
    assert pp.split(ALL_NAMES) == (train, held)
    # Default names: the available photos, split the same way.
    train_a, held_a = pp.split()
    assert train_a == [n for n in train if n in pp.available()]
    assert held_a == [n for n in held if n in pp.available()]
    if pp.available():
        assert held_a


@pytest.mark.parametrize("fraction", [0.1, 0.34, 0.5, 0.9])
def test_split_by_fraction_is_deterministic(fraction):
    train, held = pp.split(ALL_NAMES, held_out_fraction=fraction)
    assert (train, held) == pp.split(reversed(ALL_NAMES), held_out_fraction=fraction)
    assert held and train and not set(train) & set(held)
    assert sorted(train + held) == sorted(ALL_NAMES)
    with pytest.raises(ValueError, match="held_out_fraction"):
        pp.split(ALL_NAMES, held_out_fraction=1.0)


def test_unknown_name_is_a_one_line_value_error():
    for call in (lambda: pp.load("lena"), lambda: pp.split(["astronaut", "lena"])):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "'lena'" in message
        assert all(name in message for name in ALL_NAMES)


def test_missing_package_is_a_clear_value_error(monkeypatch):
    monkeypatch.setattr(pp.importlib.util, "find_spec", lambda name, *a: None)
    assert pp.available() == []
    with pytest.raises(ValueError, match="pip install scikit-learn") as info:
        pp.load("china")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="pip install scikit-image"):
        pp.load("astronaut")
