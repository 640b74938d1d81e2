"""Models: where they come from (`sources`, `checkpoints`), the activation grammar (`sites`), where each
architecture keeps its blocks (`families`), loading (`loading`), forward hooks (`hooks`), activation sets
from one forward pass (`extraction`), the sequence classifier's and the LM's pieces (`classifier`, `lm`),
training (`training`: the loop pretraining and fine-tuning share; `finetuning`; `resume`) and models
built from a config (`scratch`).

`sources`, `sites` and `families` import neither torch nor transformers: the Snakefile
uses them on every start.
"""
