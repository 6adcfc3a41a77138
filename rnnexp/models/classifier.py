"""A sequence classifier: optional input projection -> recurrent core -> linear readout.

The core is a fused kernel (nn.RNN/LSTM/GRU) for `cell` rnn, lstm and gru, else any cell run step by
step (rnnexp.models.recurrent: a built-in name of rnnexp.models.cells or a class's dotted path)."""

from __future__ import annotations

import torch
from torch import nn

from rnnexp.models import recurrent
from rnnexp.models.init import initialize

CORES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class SequenceClassifier(nn.Module):
    """Classifies a (batch, steps, features) sequence from the core's final hidden state.

    `forget_bias` is added to the LSTM forget-gate bias after initialization, as TensorFlow's
    BasicLSTMCell adds 1.0 (and Keras's `unit_forget_bias`). For a bidirectional core the readout
    sees the forward direction's last step and the backward direction's last step (the first
    time step), concatenated.

    A step-wise cell takes its own settings from `cell_args` and starts from its own
    initialization; `residual` adds each layer's input to its output above the first layer.
    """

    def __init__(
        self,
        input_size: int,
        num_classes: int = 10,
        cell: str = "lstm",
        hidden_size: int = 128,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        nonlinearity: str = "tanh",
        forget_bias: float = 0.0,
        input_projection: int | None = None,
        init: str = "default",
        readout_init: str = "default",
        projection_init: str = "default",
        cell_args: dict | None = None,
        residual: bool = False,
    ):
        super().__init__()
        self.projection = nn.Linear(input_size, input_projection) if input_projection else nn.Identity()
        if cell in CORES:
            extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
            self.core = CORES[cell](
                input_projection or input_size,
                hidden_size,
                num_layers=layers,
                batch_first=True,
                dropout=dropout if layers > 1 else 0.0,
                bidirectional=bidirectional,
                **extra,
            )
            width = hidden_size * (2 if bidirectional else 1)
        else:  # its own initialization: rnnexp.config refuses another `init` for it
            self.core = recurrent.build(
                cell, cell_args, input_projection or input_size, hidden_size,
                layers=layers, bidirectional=bidirectional, dropout=dropout, residual=residual,
            )  # fmt: skip
            width = self.core.output_size
        self.readout = nn.Linear(width, num_classes)
        initialize(self.core, init)
        initialize(self.readout, readout_init)
        if input_projection:
            initialize(self.projection, projection_init)
        if forget_bias:
            with torch.no_grad():
                for name, p in self.core.named_parameters():
                    if name.startswith("bias_ih"):
                        p[hidden_size : 2 * hidden_size] += forget_bias  # gate order: i, f, g, o

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.core, recurrent.Recurrent):
            return self.readout(self.core.last(self.core(self.projection(x))))
        _, state = self.core(self.projection(x))
        h = state[0] if isinstance(state, tuple) else state  # LSTM returns (h, c)
        directions = 2 if self.core.bidirectional else 1
        last = h[-directions:]  # the top layer's final state, each direction
        return self.readout(torch.cat(tuple(last), dim=-1))
