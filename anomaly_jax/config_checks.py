"""The rules between config fields that types alone cannot state (`validate`), checked by
`config.apply_overrides` after every `--set`: ranges, which model fits which task, which
options a model reads. Each failure is one ConfigError naming the key and what is valid.

The schema itself (sections, fields, types, enumerations) is `anomaly_jax.config`.
"""
from __future__ import annotations

from anomaly_jax.config import (DENSE_MODELS, DETECTION_MODELS, MIX_KIND, Config, ModelConfig,
                                choices, mix_weights)
from anomaly_jax.errors import ConfigError


def validate(config: Config) -> None:
    """Checks values that types alone do not; raises ConfigError naming the key."""
    c = config
    if c.data.image_size < 16:
        raise ConfigError(f"data.image_size={c.data.image_size}: expected at least 16")
    if c.model.name not in DETECTION_MODELS + DENSE_MODELS and c.data.image_size % 16:
        raise ConfigError(
            f"data.image_size={c.data.image_size}: model {c.model.name} needs a multiple of 16")
    if not 0.0 <= c.data.val_fraction + c.data.test_fraction < 1.0:
        raise ConfigError("data.val_fraction + data.test_fraction: expected a sum in [0, 1)")
    if not 0.0 <= c.corruption.p_altered <= 1.0:
        raise ConfigError(f"corruption.p_altered={c.corruption.p_altered}: expected 0..1")
    for key in ("train.batch_size", "train.epochs", "data.num_images", "train.log_every",
                "train.steps_per_dispatch", "checkpoint.keep"):
        section, name = key.split(".")
        if getattr(getattr(c, section), name) < 1:
            raise ConfigError(f"{key}: expected a positive integer")
    if not 0 <= c.corruption.jpeg_quality <= 100:
        raise ConfigError(f"corruption.jpeg_quality={c.corruption.jpeg_quality}: expected 0 "
                          "(off) or a quality in 1..100")
    mix_weights(c.corruption)  # raises on a malformed string
    if c.corruption.mix_weights and c.corruption.kind != MIX_KIND:
        raise ConfigError(f"corruption.mix_weights={c.corruption.mix_weights!r}: only read "
                          f"when corruption.kind='{MIX_KIND}' (it is {c.corruption.kind!r})")
    _check_model_fits_task(c)
    dense = c.model.name == "localiser"
    if (c.data.crop_size or c.data.package_photos) and not dense:
        raise ConfigError("data.crop_size / data.package_photos: only the dense localiser "
                          "(model.name='localiser') trains on crops")
    if c.model.target != "edges" and not dense:
        raise ConfigError(f"model.target={c.model.target!r}: only the dense localiser "
                          "(model.name='localiser') has a target")
    if dense:
        if c.model.target == "edges" and (c.corruption.kind, c.corruption.region) != (
                "discolor", "square"):
            raise ConfigError(
                f"corruption.kind={c.corruption.kind!r}, corruption.region="
                f"{c.corruption.region!r}: model localiser finds discolor squares with "
                "model.target='edges'; expected kind 'discolor' and region 'square', or set "
                "model.target=mask (a per-pixel mask for any kind and region)")
        if c.data.source == "csv":
            raise ConfigError("data.source='csv': the localiser trains on clean images it "
                              "alters itself; use landscapes or folder")
        if not 0 <= c.data.crop_size <= c.data.image_size or 0 < c.data.crop_size < 32:
            raise ConfigError(f"data.crop_size={c.data.crop_size}: expected 0 or 32.."
                              f"{c.data.image_size} (data.image_size)")
        if not 0.25 <= c.data.min_scale <= 1.0:
            raise ConfigError(f"data.min_scale={c.data.min_scale}: expected 0.25..1")
        if not 0.0 <= c.data.p_frame <= 1.0:
            raise ConfigError(f"data.p_frame={c.data.p_frame}: expected 0..1")
        if c.data.crops_per_image < 1:
            raise ConfigError("data.crops_per_image: expected a positive integer")
        if c.model.width < 1:
            raise ConfigError("model.width: expected a positive integer")
    for name in ("image_loss", "mask_min_change"):  # the mask target's loss options
        value = getattr(c.train, name)
        if value < 0:
            raise ConfigError(f"train.{name}={value}: expected 0 or more")
        if value and c.model.target != "mask":
            raise ConfigError(f"train.{name}={value}: only the mask-target localiser "
                              "(model.name='localiser', model.target='mask') has this loss "
                              "option")
    if c.data.source == "folder" and not c.data.dir:
        raise ConfigError("data.dir: required when data.source='folder'")
    if c.data.source == "csv" and not c.data.csv:
        raise ConfigError("data.csv: required when data.source='csv'")


def _check_model_fits_task(c: Config) -> None:
    """Detection models need clean and altered images; the seed's centre regressors need
    every image altered; the dense localiser needs some altered."""
    p, name = c.corruption.p_altered, c.model.name
    regressors = [m for m in choices(ModelConfig, "name")
                  if m not in DETECTION_MODELS + DENSE_MODELS]
    if name in DETECTION_MODELS and not 0.0 < p < 1.0:
        raise ConfigError(
            f"model.name={name!r} detects (altered or not?) and needs clean and altered images,"
            f" but corruption.p_altered={p:g} {'alters every image' if p else 'alters none'}; "
            f"set it between 0 and 1 (seed 2: 0.5), or localise with one of "
            f"{', '.join(regressors + list(DENSE_MODELS))}")
    if name in regressors and p != 1.0:
        raise ConfigError(
            f"model.name={name!r} regresses the altered square's centre and needs every image "
            f"altered, but corruption.p_altered={p:g}; set it to 1, or use "
            f"{', '.join(DENSE_MODELS)} (clean images allowed) or detect with "
            f"{', '.join(DETECTION_MODELS)}")
    if name in DENSE_MODELS and p == 0.0:
        raise ConfigError(f"corruption.p_altered=0: model {name!r} has nothing to find; "
                          "expected a probability above 0")
