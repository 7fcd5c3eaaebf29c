"""3D memory tasks on habitat-sim in procedural apartments (``scenes``); habitat-sim is imported only by the envs."""
