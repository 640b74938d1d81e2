"""Files every stage reads and writes: atomic writes, JSON, activation sets and tokens tables."""
