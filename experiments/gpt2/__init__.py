"""GPT-2 exactly (OpenAI 2019), so real GPT-2 weights can be imported, sampled and fine-tuned."""
