"""Measurements on trained models: PCA baselines (`pca`), likelihood bounds (`likelihood`),
codes as features (`features`: linear probe, k-means, sparsity)."""
