"""Progressive delivery of registry versions: the rollout spec, analysis, the local traffic layer and the controller."""
