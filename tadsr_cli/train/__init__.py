"""Training data and the teacher / TAD-SR distillation training (beside the pipeline, layer 5)."""
