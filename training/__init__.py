"""LoRA fine-tuning: teach a video-LLM to write the chain's foley script from one simple prompt."""
