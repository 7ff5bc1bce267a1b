"""sklears-neural: neural networks as scikit-learn estimators, on PyTorch."""

from sklears_neural._version import __version__
from sklears_neural.core.config import from_config
from sklears_neural.core.persistence import load
from sklears_neural.core.gradcheck import check_gradients
from sklears_neural.models.autoencoder import Autoencoder
from sklears_neural.models.cnn import CNNClassifier, CNNRegressor
from sklears_neural.models.diffusion import DiffusionModel
from sklears_neural.models.energy import EnergyBasedModel
from sklears_neural.models.flow import NormalizingFlow
from sklears_neural.models.gan import GAN
from sklears_neural.models.gnn import (
    GNNClassifier,
    GNNNodeClassifier,
    GNNNodeRegressor,
    GNNRegressor,
    GraphFeaturizer,
)
from sklears_neural.models.hopfield import HopfieldNetwork
from sklears_neural.models.mlp import MLPClassifier, MLPRegressor
from sklears_neural.models.neural_net import NeuralNetClassifier, NeuralNetRegressor
from sklears_neural.models.rbm import BernoulliRBM
from sklears_neural.models.rnn import RNNClassifier, RNNRegressor
from sklears_neural.models.self_supervised import BYOLEncoder, ContrastiveEncoder
from sklears_neural.models.seq2seq import Seq2SeqModel
from sklears_neural.models.transformer import TransformerClassifier, TransformerRegressor
from sklears_neural.models.vae import VAE
from sklears_neural import nn  # noqa: F401  (registers the family networks)

__all__ = [
    "Autoencoder",
    "BYOLEncoder",
    "BernoulliRBM",
    "CNNClassifier",
    "CNNRegressor",
    "ContrastiveEncoder",
    "DiffusionModel",
    "EnergyBasedModel",
    "GAN",
    "GNNClassifier",
    "GNNNodeClassifier",
    "GNNNodeRegressor",
    "GNNRegressor",
    "GraphFeaturizer",
    "HopfieldNetwork",
    "MLPClassifier",
    "MLPRegressor",
    "NeuralNetClassifier",
    "NeuralNetRegressor",
    "NormalizingFlow",
    "RNNClassifier",
    "RNNRegressor",
    "Seq2SeqModel",
    "TransformerClassifier",
    "TransformerRegressor",
    "VAE",
    "__version__",
    "from_config",
    "load",
    "check_gradients",
]
