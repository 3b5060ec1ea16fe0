"""Prefect flows (build-dataset, process-shard, train-lora, publish-dataset) and the `foley` CLI."""
