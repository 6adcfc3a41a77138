"""The built-in step-wise cells (rnnexp.models.recurrent says what a cell is), each initialized as its
paper or reference implementation does. `model.cell=<name>` picks one; its settings are
`model.cell_args.<argument>` (`+model.cell_args.cell_clip=3`).

Each precomputes what depends on the input alone for the whole sequence (`inputs`: one matrix
product over all steps), so the time loop does only the recurrent product.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from rnnexp.errors import ConfigError


def _positive(key: str, value: float | None, null: bool = False) -> None:
    if value is None and null:
        return
    if value is None or not value > 0:
        raise ConfigError(f"model.cell_args.{key}={value}: must be a number > 0" + (" or null" if null else ""))


class TwoStates(nn.Module):
    """A cell whose state is two tensors of hidden_size (h and c, y and z), both zero at the start."""

    hidden_size: int

    def initial_state(self, batch: int, device, dtype):
        zeros = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)
        return zeros, zeros


class LSTMCell(nn.Module):
    """One step of nn.LSTM: gates i, f, g, o from `weight_ih @ x + bias_ih + weight_hh @ h + bias_hh`,
    its parameters laid out as nn.LSTM's (`weight_hr` for `proj_size`), initialized as nn.LSTM's
    (uniform in +-1/sqrt(hidden_size)); with the defaults it computes what nn.LSTM computes.

    TensorFlow's LSTMCell options: `use_peepholes` (the gates i and f see the previous cell state, o
    the new one, each through a vector of weights), `cell_clip` (the cell state clipped to
    +-cell_clip after each step), `proj_size` (the output, and the recurrent input, is h projected to
    this size), `forget_bias` (added to the forget gate's input at every step, not to the bias).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_peepholes: bool = False,
        cell_clip: float | None = None,
        proj_size: int = 0,
        forget_bias: float = 0.0,
    ):
        super().__init__()
        _positive("cell_clip", cell_clip, null=True)
        if proj_size < 0:
            raise ConfigError(f"model.cell_args.proj_size={proj_size}: must be an integer >= 0 (0: no projection)")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.output_size = proj_size or hidden_size
        self.cell_clip, self.forget_bias = cell_clip, forget_bias
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, self.output_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        self.peephole = nn.Parameter(torch.empty(3, hidden_size)) if use_peepholes else None  # i, f, o
        self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size)) if proj_size else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def initial_state(self, batch: int, device, dtype):
        return (
            torch.zeros(batch, self.output_size, device=device, dtype=dtype),
            torch.zeros(batch, self.hidden_size, device=device, dtype=dtype),
        )

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)

    def forward(self, x_t: torch.Tensor, state):
        h, c = state
        i, f, g, o = (x_t + F.linear(h, self.weight_hh)).chunk(4, dim=-1)
        if self.peephole is not None:
            i, f = i + self.peephole[0] * c, f + self.peephole[1] * c
        c = torch.sigmoid(f + self.forget_bias) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.cell_clip is not None:
            c = c.clamp(-self.cell_clip, self.cell_clip)
        if self.peephole is not None:
            o = o + self.peephole[2] * c
        h = torch.sigmoid(o) * torch.tanh(c)
        if self.weight_hr is not None:
            h = F.linear(h, self.weight_hr)
        return h, (h, c)


class PeepholeLSTMCell(LSTMCell):
    """TensorFlow's LSTMCell (tf.compat.v1.nn.rnn_cell.LSTMCell) with peepholes on (Gers & Schmidhuber
    2000; Sak et al. 2014 for the projection): LSTMCell's computation with TensorFlow's defaults,
    forget_bias 1.0, and its initialization: Glorot uniform over the joined kernel
    [inputs + outputs, 4 x hidden], the peephole vectors and the projection, biases zero."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        use_peepholes: bool = True,
        cell_clip: float | None = None,
        proj_size: int = 0,
        forget_bias: float = 1.0,
    ):
        super().__init__(input_size, hidden_size, use_peepholes, cell_clip, proj_size, forget_bias)

    def reset_parameters(self) -> None:
        fan_in, fan_out = self.input_size + self.output_size, 4 * self.hidden_size  # TensorFlow's one kernel
        bound = math.sqrt(6 / (fan_in + fan_out))
        nn.init.uniform_(self.weight_ih, -bound, bound)
        nn.init.uniform_(self.weight_hh, -bound, bound)
        nn.init.zeros_(self.bias_ih)
        nn.init.zeros_(self.bias_hh)
        if self.peephole is not None:  # a vector: fan_in = fan_out = its length
            nn.init.uniform_(self.peephole, -math.sqrt(3 / self.hidden_size), math.sqrt(3 / self.hidden_size))
        if self.weight_hr is not None:
            nn.init.xavier_uniform_(self.weight_hr)


class LayerNormLSTMCell(TwoStates):
    """The layer-normalized LSTM of Ba, Kiros & Hinton 2016 (Layer Normalization, sec. 3.1 and
    appendix): the input and recurrent products normalized apart, each with its own gain, and the
    cell state normalized before the output's tanh. Gains 1, biases 0 (the paper's), weights as
    nn.LSTM's; `forget_bias` starts the forget gate's bias there (1.0: Jozefowicz et al. 2015)."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0):
        super().__init__()
        self.hidden_size = self.output_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        self.norm_ih = nn.LayerNorm(4 * hidden_size, bias=False)
        self.norm_hh = nn.LayerNorm(4 * hidden_size, bias=False)
        self.norm_c = nn.LayerNorm(hidden_size)
        bound = 1 / math.sqrt(hidden_size)
        nn.init.uniform_(self.weight_ih, -bound, bound)
        nn.init.uniform_(self.weight_hh, -bound, bound)
        with torch.no_grad():
            self.bias[hidden_size : 2 * hidden_size] = forget_bias  # gate order i, f, g, o

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_ih(F.linear(x, self.weight_ih)) + self.bias  # per step: normalized over the features

    def forward(self, x_t: torch.Tensor, state):
        h, c = state
        i, f, g, o = (x_t + self.norm_hh(F.linear(h, self.weight_hh))).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.norm_c(c))
        return h, (h, c)


class IndRNNCell(nn.Module):
    """Independently recurrent neurons (Li et al., CVPR 2018): h = relu(W x + u * h + b), each unit
    its own recurrent weight u. Recurrent weights uniform in [0, 1], input weights Kaiming uniform,
    biases 0; `recurrent_max` keeps |u| within it (the paper's constraint for T steps: 2 ** (1 / T)),
    applied where u is used."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        nonlinearity: Literal["relu", "tanh"] = "relu",
        recurrent_max: float | None = None,
    ):
        super().__init__()
        _positive("recurrent_max", recurrent_max, null=True)
        self.hidden_size = self.output_size = hidden_size
        self.activation = torch.relu if nonlinearity == "relu" else torch.tanh
        self.recurrent_max = recurrent_max
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        nn.init.kaiming_uniform_(self.weight_ih, nonlinearity="relu")
        nn.init.uniform_(self.weight_hh, 0, 1)

    def initial_state(self, batch: int, device, dtype):
        return torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def forward(self, x_t: torch.Tensor, h):
        u = self.weight_hh
        if self.recurrent_max is not None:
            u = u.clamp(-self.recurrent_max, self.recurrent_max)
        h = self.activation(x_t + u * h)
        return h, h


class CoRNNCell(TwoStates):
    """Coupled oscillatory RNN (Rusch & Mishra, ICLR 2021): a second-order ODE of damped, driven
    oscillators, discretized with step dt:
    z = z + dt * (tanh(W y + V z + U x + b) - gamma * y - epsilon * z); y = y + dt * z; the output is y.
    Defaults: the paper's sequential-MNIST dt, gamma and epsilon; weights as its code's one
    nn.Linear over [x, z, y] (uniform in +-1/sqrt(inputs + 2 x hidden))."""

    def __init__(self, input_size: int, hidden_size: int, dt: float = 0.042, gamma: float = 2.7, epsilon: float = 4.7):
        super().__init__()
        _positive("dt", dt)
        self.hidden_size = self.output_size = hidden_size
        self.dt, self.gamma, self.epsilon = dt, gamma, epsilon
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, 2 * hidden_size))  # [z, y], as the paper's code
        self.bias = nn.Parameter(torch.empty(hidden_size))
        bound = 1 / math.sqrt(input_size + 2 * hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def forward(self, x_t: torch.Tensor, state):
        y, z = state
        drive = torch.tanh(x_t + F.linear(torch.cat([z, y], dim=-1), self.weight_hh))
        z = z + self.dt * (drive - self.gamma * y - self.epsilon * z)
        y = y + self.dt * z
        return y, (y, z)


class LEMCell(TwoStates):
    """Long expressive memory (Rusch, Mishra, Erichson & Mahoney, ICLR 2022): two learned time steps,
    dt * sigmoid(...), integrate a slow and a fast state. All weights and biases uniform in
    +-1/sqrt(hidden_size), as the paper's code. The output is y."""

    def __init__(self, input_size: int, hidden_size: int, dt: float = 1.0):
        super().__init__()
        _positive("dt", dt)
        self.hidden_size = self.output_size = hidden_size
        self.dt = dt
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        self.weight_z = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_z = nn.Parameter(torch.empty(hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)

    def forward(self, x_t: torch.Tensor, state):
        y, z = state
        i_dt1, i_dt2, i_z, i_y = x_t.chunk(4, dim=-1)
        h_dt1, h_dt2, h_y = F.linear(y, self.weight_hh, self.bias_hh).chunk(3, dim=-1)
        dt_bar = self.dt * torch.sigmoid(i_dt1 + h_dt1)
        dt = self.dt * torch.sigmoid(i_dt2 + h_dt2)
        z = (1 - dt) * z + dt * torch.tanh(i_y + h_y)
        y = (1 - dt_bar) * y + dt_bar * torch.tanh(F.linear(z, self.weight_z, self.bias_z) + i_z)
        return y, (y, z)


# model.cell's built-in step-wise names (rnn, lstm and gru are the fused kernels: classifier.CORES)
CELLS = {
    "lstm_stepwise": LSTMCell,
    "lstm_peephole": PeepholeLSTMCell,
    "lnlstm": LayerNormLSTMCell,
    "indrnn": IndRNNCell,
    "cornn": CoRNNCell,
    "lem": LEMCell,
}
