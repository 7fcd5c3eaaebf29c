"""Parameter conversion between PyTorch ``nn.Linear`` layers and Haiku ``hk.Linear`` parameter dicts.

Haiku stores ``w`` as ``[in, out]``; ``nn.Linear`` stores ``weight`` as ``[out, in]``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def linear_to_haiku(layer: nn.Linear) -> dict[str, np.ndarray]:
    params = {"w": layer.weight.detach().cpu().numpy().T.copy()}
    if layer.bias is not None:
        params["b"] = layer.bias.detach().cpu().numpy().copy()
    return params


@torch.no_grad()
def linear_from_haiku(layer: nn.Linear, params: dict) -> None:
    w = torch.as_tensor(np.asarray(params["w"]))
    if w.shape != (layer.in_features, layer.out_features):
        raise ValueError(f"haiku w has shape {tuple(w.shape)}, expected {(layer.in_features, layer.out_features)}")
    layer.weight.copy_(w.T)
    if layer.bias is not None:
        if "b" not in params:
            raise ValueError("haiku params lack the bias 'b' that this nn.Linear has")
        layer.bias.copy_(torch.as_tensor(np.asarray(params["b"])))
    elif "b" in params:
        raise ValueError("haiku params have a bias 'b' but this nn.Linear has none")
