"""NNMemory: tokens attend to a bank of learned memory cells shared by all blocks (see README.md)."""
