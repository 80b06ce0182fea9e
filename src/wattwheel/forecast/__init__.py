"""Forecasting: the Forecaster protocol, the Forecast value, baselines and the LSTM. Pure."""
