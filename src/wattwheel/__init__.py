"""wattwheel: keep a data center inside its power budget by anticipating demand."""

__version__ = "0.1.0"
