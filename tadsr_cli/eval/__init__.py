"""`tadsr eval`: metrics, baselines, the eval runner and its reports (beside the pipeline, layer 4)."""
