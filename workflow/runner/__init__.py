"""How stages run: the command table (`commands`), the command line every stage shares (`cli`),
running a stage in this process (`run`) or in a child of the machine's fork server (`jobserver`),
each GPU job's own card (`gpus`), and each stage's code version for Snakemake (`codehash`)."""
