"""Hand-written GPU kernels for what torch.compile leaves slow: each file one kernel and its autograd.
Importing a kernel needs Triton (a GPU build of torch brings it); lmplay.loss uses them where it is there."""
