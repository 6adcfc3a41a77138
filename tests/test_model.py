import math

import pytest
import torch
from torch import nn

from rnnexp import settings
from rnnexp.data.datamodule import VIEWS
from rnnexp.data.datasets import DATASETS
from rnnexp.models.cells import CELLS
from rnnexp.models.classifier import CORES, SequenceClassifier
from rnnexp.models.init import INITIALIZERS


def test_config_checks_know_the_same_names_as_the_code():
    assert tuple(INITIALIZERS) == settings.INITIALIZERS
    assert tuple(CORES) == settings.CELLS
    assert tuple(CELLS) == settings.STEPWISE_CELLS
    assert tuple(VIEWS) == settings.VIEWS
    assert tuple(DATASETS) == settings.DATASETS


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers, bidirectional, projection", [(1, False, None), (3, True, 32)])
def test_output_is_one_logit_vector_per_sequence(cell, layers, bidirectional, projection):
    model = SequenceClassifier(
        28, cell=cell, hidden_size=24, layers=layers, bidirectional=bidirectional, input_projection=projection
    )
    assert isinstance(model.core, CORES[cell])
    assert model.core.input_size == (projection or 28) and model.core.num_layers == layers
    assert model(torch.rand(5, 28, 28)).shape == (5, 10)


def test_readout_sees_the_last_time_step_of_the_top_layer():
    torch.manual_seed(0)
    model = SequenceClassifier(28, cell="gru", hidden_size=8, layers=2)
    x = torch.rand(3, 28, 28)
    outputs, _ = model.core(x)
    assert torch.allclose(model(x), model.readout(outputs[:, -1]))


def test_bidirectional_readout_joins_both_directions_final_states():
    torch.manual_seed(0)
    model = SequenceClassifier(28, cell="lstm", hidden_size=8, bidirectional=True)
    x = torch.rand(3, 28, 28)
    outputs, _ = model.core(x)
    forward_last, backward_first = outputs[:, -1, :8], outputs[:, 0, 8:]
    assert torch.allclose(model(x), model.readout(torch.cat([forward_last, backward_first], -1)), atol=1e-6)


def test_rnn_nonlinearity_reaches_the_core():
    assert SequenceClassifier(28, cell="rnn", nonlinearity="relu").core.nonlinearity == "relu"


def weights(module: nn.Module, kind: str) -> list[torch.Tensor]:
    return [p.detach() for n, p in module.named_parameters() if n.startswith(kind)]


def build(init: str, readout_init: str = "default", hidden: int = 64) -> SequenceClassifier:
    torch.manual_seed(0)
    return SequenceClassifier(28, cell="lstm", hidden_size=hidden, init=init, readout_init=readout_init)


def test_default_init_is_pytorchs_own():
    torch.manual_seed(0)
    reference = nn.LSTM(28, 64, batch_first=True)
    assert all(torch.equal(a, b) for a, b in zip(reference.parameters(), build("default").core.parameters()))


def test_normal_init_draws_weights_and_biases_from_unit_gaussian():
    model = build("normal", readout_init="normal")
    for module in (model.core, model.readout):
        values = torch.cat([p.flatten() for p in module.parameters()])
        tolerance = 4 / math.sqrt(len(values))  # four standard errors
        assert abs(values.mean()) < tolerance and abs(values.std() - 1) < 2 * tolerance
    assert weights(model.readout, "bias")[0].abs().sum() > 0  # biases drawn too, not zeroed


def test_xavier_init_is_glorot_uniform_with_zero_bias():
    core = build("xavier").core
    for w in weights(core, "weight"):
        bound = math.sqrt(6 / (w.shape[0] + w.shape[1]))
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert all(b.abs().sum() == 0 for b in weights(core, "bias"))


def test_orthogonal_init_gives_orthonormal_columns():
    for w in weights(build("orthogonal").core, "weight"):
        assert torch.allclose(w.T @ w, torch.eye(w.shape[1]), atol=1e-4)


def test_he_init_has_kaiming_normal_spread():
    w = weights(build("he", hidden=256).core, "weight_hh")[0]
    assert abs(w.std() - math.sqrt(2 / w.shape[1])) < 0.01


def test_variance_scaling_is_truncated_normal_over_input_plus_hidden_fan_in():
    model = build("variance_scaling", readout_init="variance_scaling", hidden=256)
    std = math.sqrt(1 / (28 + 256)) / 0.87962566103423978
    core_weights = torch.cat([w.flatten() for w in weights(model.core, "weight")])
    assert core_weights.abs().max() <= 2 * std  # cut at two standard deviations
    assert abs(core_weights.std() - math.sqrt(1 / (28 + 256))) < 0.002  # spread after the cut: 1/fan_in
    readout = weights(model.readout, "weight")[0]
    assert readout.abs().max() <= 2 * math.sqrt(1 / 256) / 0.87962566103423978
    assert all(b.abs().sum() == 0 for b in weights(model.core, "bias") + weights(model.readout, "bias"))


def test_keras_init_is_glorot_input_orthogonal_recurrent_zero_bias():
    core = build("keras").core
    w_ih, w_hh = core.weight_ih_l0.detach(), core.weight_hh_l0.detach()
    assert w_ih.abs().max() <= math.sqrt(6 / (28 + 4 * 64))
    assert torch.allclose(w_hh.T @ w_hh, torch.eye(64), atol=1e-4)
    assert all(b.abs().sum() == 0 for b in weights(core, "bias"))


def test_forget_bias_is_added_to_the_forget_gate_only():
    torch.manual_seed(0)
    plain = SequenceClassifier(28, cell="lstm", hidden_size=16, layers=2, init="keras")
    torch.manual_seed(0)
    biased = SequenceClassifier(28, cell="lstm", hidden_size=16, layers=2, init="keras", forget_bias=1.0)
    for layer in range(2):
        total = getattr(biased.core, f"bias_ih_l{layer}") + getattr(biased.core, f"bias_hh_l{layer}")
        assert torch.equal(total[16:32], torch.ones(16))  # gate order i, f, g, o
        assert total[:16].abs().sum() == 0 and total[32:].abs().sum() == 0
    assert torch.equal(plain.core.weight_ih_l0, biased.core.weight_ih_l0)


def test_projection_init_applies_to_the_input_projection():
    torch.manual_seed(0)
    model = SequenceClassifier(28, input_projection=128, projection_init="normal")
    assert abs(model.projection.weight.std() - 1) < 0.05


def test_unknown_initializer_names_the_choices():
    with pytest.raises(ValueError, match="choose one of default, normal"):
        SequenceClassifier(28, init="glorot")
