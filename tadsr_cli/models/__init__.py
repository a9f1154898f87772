"""Networks, autoencoders, the ResShift schedule and samplers, model files and the model registry (layer 1)."""
