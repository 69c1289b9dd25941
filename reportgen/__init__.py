"""reportgen: see and measure what every convolution layer of a CNN does."""

__version__ = "0.1.0"
