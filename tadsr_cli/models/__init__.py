"""Networks, autoencoders, the ResShift schedule and samplers, model files, the model catalogue, cache and download (layer 1)."""
