"""Inference: sliding-window prediction and the Predictor that turns checkpoints into label maps."""
