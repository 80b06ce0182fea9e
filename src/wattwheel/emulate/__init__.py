"""Virtual devices driven by a trace, speaking the real protocols."""
