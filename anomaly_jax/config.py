"""The config schema: one frozen dataclass per section, and `--set key=value` overrides.

Named experiments (instances of `Config`) live in `experiments/configs.py`; this module only
says which fields exist, their types and allowed values; the rules between fields that types
cannot state are in `anomaly_jax.config_checks`. Add a field here, with a default that
keeps every existing experiment unchanged.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal

from anomaly_jax.errors import ConfigError

# Each enumeration is defined once, here: a `Literal` field's values (read them with
# `choices`), plus the subsets below. Other modules read them from this module.
SYNTHETIC_SOURCES = ("landscapes", "solid", "black")  # made on the device (anomaly_jax.synthetic)
DETECTION_MODELS = ("white_box_net",)  # classify altered / clean (seed 2); the rest localise
DENSE_MODELS = ("localiser",)  # per-pixel maps decoded into a square (anomaly_jax.localiser)
# Alteration kinds (CorruptionConfig.kind): the seeds' three (anomaly_jax.corruptions), issue
# 12's edits (anomaly_jax.edits), and "mix", a kind drawn per example. KIND_ORDER is what the
# `kind` label (int32, edit_sampling.alter_batch_mix and the CSV's `kind` column read back) indexes:
# append new kinds at its end, so old indices keep their meaning.
SEED_KINDS = ("discolor", "white_box", "scramble")
EDIT_KINDS = ("smudge", "erase", "stretch", "copy_move", "splice")
KIND_ORDER = SEED_KINDS + EDIT_KINDS
MIX_KIND = "mix"


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: Literal["landscapes", "solid", "black", "folder", "csv"] = "landscapes"
    dir: str = ""  # folder of photos (source "folder")
    csv: str = ""  # seed-format labels.csv (source "csv")
    image_size: int = 800  # side in pixels; every image is resized to a square
    num_images: int = 200  # how many images a synthetic source makes
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    # "auto" keeps a dataset that fits on the device there, else in host memory, else streams.
    cache: Literal["auto", "device", "host", "stream"] = "auto"
    workers: int = -1  # grain decode worker processes; -1 = one per CPU core (at most 8)
    # Dense localiser only: add the training split of the real photos shipped inside the
    # scikit-image / scikit-learn wheels (anomaly_jax.package_photos) to the clean images.
    package_photos: bool = False
    # Dense localiser only: train on random crops of this side at native scale (0 = off);
    # validation and inference still see whole images.
    crop_size: int = 0
    crops_per_image: int = 1  # crops of each training image per epoch
    # Dense localiser only: crops are shrunk by a random factor in [min_scale, 1] (1 = off).
    min_scale: float = 1.0
    # Dense localiser only: probability of decoy frames (flat bands on a crop's sides).
    p_frame: float = 0.0


@dataclasses.dataclass(frozen=True)
class CorruptionConfig:
    kind: Literal["discolor", "white_box", "scramble", "smudge", "erase", "stretch",
                  "copy_move", "splice", "mix"] = "discolor"
    # Where an alteration may change pixels (anomaly_jax.regions): seed 1's square, or a
    # free-form blob inside that square.
    region: Literal["square", "free"] = "square"
    # kind "mix" only: "kind=weight,..." (e.g. "smudge=2,erase=1"), kinds left out weigh 0;
    # "" = every kind of KIND_ORDER equally likely. Parsed by `mix_weights`.
    mix_weights: str = ""
    overflow: Literal["wrap", "clip"] = "wrap"
    p_altered: float = 1.0  # 1.0: seed 1 (localisation); 0.5: seed 2 (detection)
    # "per_example": each image keeps one alteration for the whole run (the seeds);
    # "per_step": a fresh alteration every time an image is seen.
    resample: Literal["per_example", "per_step"] = "per_example"
    box_size: int = 16  # white_box side as passed to Pillow (17 pixels drawn for 16)
    # JPEG round trip on the device after the alteration (anomaly_jax.jpeg); 0 = off.
    # Seed 1 saved its photos with Pillow's default, 75.
    jpeg_quality: int = 0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: Literal[
        "seed_cnn", "fusion_early", "fusion_late", "fusion_linear", "white_box_net", "localiser"
    ] = "seed_cnn"
    width: int = 16  # localiser only: channels of its dilated conv blocks
    # localiser only: what its per-pixel maps predict. "edges": the four edges of a discolor
    # square, decoded into one square (issue 7; needs corruption.kind=discolor, region=square);
    # "mask": the altered pixels themselves (one logit map), for any kind and region shape
    # (issue 12), scored with the mask metrics.
    target: Literal["edges", "mask"] = "edges"
    dtype: Literal["float32", "bfloat16"] = "float32"  # compute dtype; params stay float32
    # Formulation of the seed models' convs and pools: "fast" = XLA:CPU tricks, "plain" =
    # textbook ops (what a GPU wants); "auto" = fast on CPU, plain elsewhere. Same parameters
    # and outputs either way (tests/test_models.py).
    impl: Literal["auto", "fast", "plain"] = "auto"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    optimizer: Literal["adam", "sgd", "nesterov"] = "adam"
    lr: float = 1e-4
    momentum: float = 0.0
    batch_size: int = 10  # global batch, split over the devices
    epochs: int = 30
    max_steps: int = 0  # stop after this many steps in total; 0 = no limit
    num_devices: int = 0  # local devices to use; 0 = all
    log_every: int = 50  # read metrics back from the device every N steps
    steps_per_dispatch: int = 1  # K train steps fused into one device call (lax.scan)
    # "constant": the seeds' fixed lr; "cosine": linear warm-up over warmup_steps, then
    # cosine decay to 5% of lr at the run's last step (optax.warmup_cosine_decay_schedule).
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    # The mask-target localiser only: weight of the image-level term of its loss
    # (`localiser.mask_loss`'s image_weight; 0 = the per-pixel loss alone).
    image_loss: float = 0.0
    # The mask-target localiser only: grey levels an edit must have changed its region by in
    # the saved crop (mean |altered - clean| over the mask and R, G, B, both through the run's
    # JPEG) to be trained as altered; a fainter edit's mask is left out of the loss. 0 = every
    # edit is trained on. An edit under JPEG's own noise (smudge: ~2 levels) otherwise
    # teaches the net that natural texture is altered (`localiser.visible_target`).
    mask_min_change: float = 0.0


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 0  # also save every N steps; 0 = only at the end of each epoch
    keep: int = 3  # latest checkpoints kept (plus the best)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"
    seed: int = 42
    data: DataConfig = DataConfig()
    corruption: CorruptionConfig = CorruptionConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()


def field_paths(config: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Every dotted key of `config` -> (type annotation, current value)."""
    hints = typing.get_type_hints(type(config))
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(value):
            out.update(field_paths(value, key + "."))
        else:
            out[key] = (hints[f.name], value)
    return out


def _parse_value(key: str, annotation: Any, text: str) -> Any:
    if typing.get_origin(annotation) is Literal:
        allowed = typing.get_args(annotation)
        if text not in allowed:
            raise ConfigError(f"{key}={text!r}: expected one of {', '.join(map(repr, allowed))}")
        return text
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"{key}={text!r}: expected true or false")
    if annotation in (int, float):
        try:
            value = annotation(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected {annotation.__name__}") from None
        if annotation is float and not math.isfinite(value):
            raise ConfigError(f"{key}={text!r}: expected a finite number")
        return value
    return text


def replace_path(config: Any, key: str, value: Any) -> Any:
    """A copy of `config` with the dotted field `key` set to `value`."""
    head, _, rest = key.partition(".")
    if rest:
        return dataclasses.replace(config, **{head: replace_path(getattr(config, head), rest, value)})
    return dataclasses.replace(config, **{head: value})


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Applies `KEY=VALUE` strings, type-checked against the schema.

    Raises ConfigError with a one-line message naming the key and what is valid.
    """
    paths = field_paths(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        if key not in paths:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(paths)}")
        annotation, _ = paths[key]
        config = replace_path(config, key, _parse_value(key, annotation, text))
    from anomaly_jax.config_checks import validate  # it reads this module's schema
    validate(config)
    return config


def mix_weights(corruption: CorruptionConfig) -> dict[str, float]:
    """corruption.mix_weights parsed: {kind: weight} over every kind of KIND_ORDER (the ones
    the string leaves out at 0; all 1.0 for ""). Raises a one-line ConfigError naming the key
    and the valid kinds for an unknown or repeated kind, a weight that is not a finite number
    >= 0, or weights that are all 0."""
    text = corruption.mix_weights.strip()
    if not text:
        return {k: 1.0 for k in KIND_ORDER}
    key = f"corruption.mix_weights={corruption.mix_weights!r}"
    expected = f"expected kind=weight,... with kinds from {', '.join(KIND_ORDER)}"
    weights = {k: 0.0 for k in KIND_ORDER}
    seen = set()
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or name not in KIND_ORDER:
            raise ConfigError(f"{key}: {item.strip()!r} is not kind=weight with a known kind; "
                              f"{expected}")
        if name in seen:
            raise ConfigError(f"{key}: {name} is given twice; {expected}")
        seen.add(name)
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"{key}: weight {value!r} of {name} is not a finite number >= 0")
        weights[name] = weight
    if not any(weights.values()):
        raise ConfigError(f"{key}: every weight is 0; give at least one kind a weight above 0")
    return weights


def to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def from_dict(d: dict) -> Config:
    """Inverse of `to_dict` (used to read a run's config.json back)."""
    def build(cls, values):
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            v = values[f.name]
            kwargs[f.name] = build(hints[f.name], v) if dataclasses.is_dataclass(hints[f.name]) else v
        return cls(**kwargs)
    return build(Config, d)


def choices(section: type, field: str) -> tuple[str, ...]:
    """The allowed values of the Literal field `field` of a config section, e.g.
    `choices(ModelConfig, "name")`: the one definition of each enumeration."""
    return typing.get_args(typing.get_type_hints(section)[field])


def is_detection(config: Config) -> bool:
    """Is this a detection run (altered or clean?) rather than a localisation run?"""
    return config.model.name in DETECTION_MODELS


assert choices(DataConfig, "source")[:len(SYNTHETIC_SOURCES)] == SYNTHETIC_SOURCES
assert set(DETECTION_MODELS + DENSE_MODELS) <= set(choices(ModelConfig, "name"))
assert choices(CorruptionConfig, "kind") == KIND_ORDER + (MIX_KIND,)
