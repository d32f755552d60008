"""Networks: backbones, eGAN's E/G/D, and baselines."""
from egan_med.models.backbones import BACKBONES, Backbone, WeightsError, check_weights
from egan_med.models.egan import (Classifier, Discriminator, Encoder, EncoderGenerator, Generator, ScorePair, count_parameters,
                              frozen_batchnorm_stats)
from egan_med.models.objectives import reconstruction_loss

__all__ = ["BACKBONES", "Backbone", "WeightsError", "check_weights", "Classifier", "Discriminator", "Encoder", "EncoderGenerator", "Generator", "ScorePair", "count_parameters",
           "frozen_batchnorm_stats", "reconstruction_loss"]
