"""The engine: model protocol, query counter, images, perturbations, estimators, optimizers,
objectives, fit state and the fit loop. Imports nothing else from blackbox_dft."""
