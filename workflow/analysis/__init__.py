"""The study's maths, shared by stages and called by them with loaded inputs: streaming similarity (CKA);
diffing two SAEs (matching, the seed floor, transfer) and the other diffing methods (crosscoding, stage-wise
fine-tuning, their agreement, scoring against a declared change in `truth`); the task and LM loss with an SAE
spliced in; per-feature statistics; probes, pooling and k-means; attention statistics, head changes and head
ablation; where two language models disagree; a linear head on frozen features; emergence and SAE alignment
in models trained from scratch; and a synthetic diff with a known answer."""
