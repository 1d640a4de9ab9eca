"""Preprocessing: crop, resample, normalize (pure array functions and their inverses)."""
