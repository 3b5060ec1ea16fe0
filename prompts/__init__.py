"""Versioned prompt templates, one file per chain step (loaded by foley_core.prompts)."""
