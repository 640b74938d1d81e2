"""Models: where they come from (`sources`), the activation grammar (`sites`), where each
architecture keeps its blocks (`families`), loading (`loading`), forward hooks (`hooks`) and
the sequence classifier's shared pieces (`classifier`).

`sources`, `sites` and `families` import neither torch nor transformers: the Snakefile
uses them on every start.
"""
