"""Tolaria: the training engine — device-resident data, the epoch loop, counterfactual evaluation, the Governor."""
