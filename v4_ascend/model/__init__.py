"""Model-level definitions (configuration) of DeepSeek V4."""
