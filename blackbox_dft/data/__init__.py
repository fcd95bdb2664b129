"""Data: data sets, image files and tables, loaders, verification pairs, shifts. Imports
blackbox_dft.core only."""
