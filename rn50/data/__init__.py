"""Input data: transforms and constants, loaders (pytorch, DALI, synthetic), the built-in sample, the doctor."""
