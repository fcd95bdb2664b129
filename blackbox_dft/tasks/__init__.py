"""Tasks on the engine: classification, verification, per-attribute fits (each a problem
plus a front end). Imports blackbox_dft.core only."""
