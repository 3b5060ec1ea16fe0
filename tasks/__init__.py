"""Prefect tasks: thin wrappers around foley_core with cache keys, retries and the GPU slot."""
