"""The study's maths, shared by stages: streaming similarity (CKA), feature matching, per-feature
statistics, probes, pooling, k-means, attention statistics and head ablation."""
