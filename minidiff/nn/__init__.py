"""Neural-network pieces written from scratch in autograd: an MLP with a time embedding, Adam, EMA."""
from .mlp import init_mlp, mlp, sinusoidal_embedding
from .optim import adam_init, adam_update, clip_grad_norm, ema_update, global_norm

__all__ = ["init_mlp", "mlp", "sinusoidal_embedding", "adam_init", "adam_update", "clip_grad_norm",
           "ema_update", "global_norm"]
