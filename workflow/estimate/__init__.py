"""What a study will cost before it runs (`python -m workflow estimate`): its jobs from Snakemake's
dry run (`jobs`), the documents, tokens and model shapes they process (`sizes`), each job's tokens,
bytes, memory and work (`costs`), and times from the benchmarks' throughputs (`throughputs.yaml`)."""
