"""The diffusion side of a node: the models and their registry (torch-free to import), schedulers and
what of their state crosses a stage boundary, the stage executor, local generation, samples files,
the embedded digits data set, training and model cards."""
