"""Generation, in six small modules imported on their own (so checking settings needs no torch):

    command_line  generate's command line as Hydra overrides (prompts and paths quoted as text)
    config    GenerationConfig: what to generate, checked up front
    sampling  the logit processors (repetition penalty, temperature, top-k, top-p) and the pick
    decode    generate_tokens: the batched, KV-cached decode loop with a sliding window
    text      generate_text: BOS, prompt cutting, streaming; what LMBase.generate_prompts calls
    loading   load_model: a checkpoint back into a model through the experiment registry
"""
