"""anomaly_jax: programmatic image alterations and CNNs that detect and localise them, in JAX."""
