"""The study's figures, one module per topic; `canvas` gives matplotlib without a display and the
atomic save every figure goes through."""
