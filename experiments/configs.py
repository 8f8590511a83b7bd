"""The named experiments: one frozen `Config` per seed experiment.

Seed 1 (discolor localisation, DESIGN §2.1) and seed 2 (white-box detection, §2.2). To add an
experiment, add a function returning a Config and register it in CONFIGS; override any field
from the command line with `--set key=value` instead of editing these.
"""
from __future__ import annotations


from anomaly_jax.config import (CheckpointConfig, Config, ConfigError, CorruptionConfig,
                                DataConfig, ModelConfig, TrainConfig)


def _seed1(name: str, model: str, lr: float, epochs: int) -> Config:
    """Seed 1: 200 landscapes at 800x800, 80/20, one fixed wrap-discolor per image, Adam."""
    return Config(
        name=name,
        data=DataConfig(source="landscapes", image_size=800, num_images=200,
                        val_fraction=0.2, test_fraction=0.0),
        corruption=CorruptionConfig(kind="discolor", overflow="wrap", p_altered=1.0,
                                    resample="per_example"),
        model=ModelConfig(name=model),
        train=TrainConfig(optimizer="adam", lr=lr, batch_size=10, epochs=epochs, log_every=4),
        checkpoint=CheckpointConfig(every_steps=0, keep=3),
    )


def _seed2(name: str, source: str) -> Config:
    """Seed 2: 1000 images at 64x64, half with a white box, 80/10/10, Nesterov SGD."""
    return Config(
        name=name,
        data=DataConfig(source=source, image_size=64, num_images=1000,
                        val_fraction=0.1, test_fraction=0.1),
        corruption=CorruptionConfig(kind="white_box", p_altered=0.5, resample="per_example",
                                    box_size=16),
        model=ModelConfig(name="white_box_net"),
        train=TrainConfig(optimizer="nesterov", lr=1e-3, momentum=0.1, batch_size=100,
                          epochs=100, log_every=8),
        checkpoint=CheckpointConfig(every_steps=0, keep=3),
    )


CONFIGS = {
    "cnn_highlr": lambda: _seed1("cnn_highlr", "seed_cnn", 5e-4, 10),
    "cnn_lowlr": lambda: _seed1("cnn_lowlr", "seed_cnn", 1e-4, 30),
    "fusion_early": lambda: _seed1("fusion_early", "fusion_early", 5e-4, 20),
    "fusion_late": lambda: _seed1("fusion_late", "fusion_late", 1e-3, 30),
    "fusion_linear": lambda: _seed1("fusion_linear", "fusion_linear", 1e-3, 30),
    "whitebox_black": lambda: _seed2("whitebox_black", "black"),
    "whitebox_solid": lambda: _seed2("whitebox_solid", "solid"),
    # Natural photos: procedural landscapes by default, or --set data.source=folder data.dir=...
    "whitebox_photos": lambda: _seed2("whitebox_photos", "landscapes"),
}


def get_config(name: str) -> Config:
    """The named experiment's Config; an unknown name is a ConfigError listing the valid ones."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown config {name!r}; valid configs: {', '.join(CONFIGS)}")
    return CONFIGS[name]()


def describe(config: Config) -> str:
    """One line summarising a config, for `--list`."""
    d, m, t, c = config.data, config.model, config.train, config.corruption
    return (f"{config.name:16s} {m.name:14s} {d.source}@{d.image_size} n={d.num_images} "
            f"{c.kind}(p={c.p_altered}) {t.optimizer} lr={t.lr:g} batch={t.batch_size} "
            f"epochs={t.epochs}")

