import torch

# Small nets on a shared 2-core CI machine run fastest, and without stalls, on one thread.
torch.set_num_threads(1)
